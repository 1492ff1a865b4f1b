"""Training on several processes: ranks, batch shards and the local launcher for ``torch.distributed``.

``resfields fit TASK --nproc N`` starts ``N`` processes on this machine (:func:`launch`); ``torchrun``
starts them on any number of machines and says so in the environment (:func:`ranks_from_environment`).
Either way every process runs :func:`~resfields.tasks.common.fit.fit` with its :class:`Ranks`; the model
is wrapped in ``DistributedDataParallel``, which all-reduces the gradients (gloo on the CPU, NCCL on
CUDA).

Batches: every rank draws the whole global batch of a step from the same ``rng([seed, step])`` and
keeps its shard (:func:`shard_batch`): of the ``(F, P, ...)`` frame-major layout, samples ``r::N`` of
every frame. Each rank then holds ``P / N`` samples of every frame, so its loss is the mean over its
shard and DDP's average of the ranks' gradients is the gradient of the global batch, as a one-process
run with the same ``--batch-size`` computes it (up to float rounding). ``--batch-size`` is the global
batch: adding ranks leaves the step's gradient, and so the learning rate, unchanged.

Collectives time out after :func:`timeout_s` seconds (``RESFIELDS_DIST_TIMEOUT_S``, default 1800): a rank
that dies without its launcher noticing ends the others' wait with an error instead of a hang.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from resfields.errors import ResFieldsError, SpecError, TrainingError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GRACE_S",
    "Ranks",
    "check_backend",
    "launch",
    "process_group",
    "rank_device",
    "ranks_from_environment",
    "shard_batch",
    "timeout_s",
]

DEFAULT_TIMEOUT_S = 1800.0
GRACE_S = 5.0  # how long the other ranks may take to end after one failed, before they are stopped
TIMEOUT_ENV = "RESFIELDS_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run of ``world`` processes: ``rank`` in ``[0, world)`` and
    ``local_rank``, its index on its machine (its GPU there)."""

    rank: int
    world: int
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world and 0 <= self.local_rank < self.world):
            raise SpecError(f"rank {self.rank} (local {self.local_rank}) of {self.world} processes is out of range")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder, shows progress and evaluates."""
        return self.rank == 0


def check_backend(backend: str, world: int) -> None:
    """SpecError unless ``backend`` can train on ``world`` processes: only torch has DDP."""
    if world > 1 and backend != "torch":
        raise SpecError(f"--nproc {world} needs --backend torch (DistributedDataParallel); {backend} has none")


def ranks_from_environment(environ: Mapping[str, str] | None = None) -> Ranks | None:
    """The :class:`Ranks` ``torchrun`` (or :func:`launch`) set in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``), or None for a single process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return Ranks(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])))
    except (KeyError, ValueError) as err:
        raise SpecError(
            f"torch.distributed environment is incomplete or malformed ({err}): need RANK and WORLD_SIZE"
        ) from None


def timeout_s() -> float:
    """Seconds a collective waits for the other ranks (``RESFIELDS_DIST_TIMEOUT_S``, default 1800)."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise SpecError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return value


def rank_device(device: str | None, ranks: Ranks) -> str | None:
    """The device of this rank: ``cuda`` becomes this machine's ``cuda:LOCAL_RANK``; anything else is kept."""
    if device == "cuda":
        return f"cuda:{ranks.local_rank}"
    return device


def shard_batch(batch: Mapping[str, np.ndarray], ranks: Ranks | None, key: str = "x") -> dict[str, np.ndarray]:
    """This rank's share of a frame-major batch: samples ``rank::world`` of every frame.

    ``batch[key]`` gives the layout ``(F, P, ...)``; every array whose first two axes are ``(F, P)`` is
    split along ``P`` (``(F, P / world, ...)``), all others (keys ``(F, 1)``, a NeRF's coarse-to-fine
    window) go to every rank whole. SpecError unless ``P`` is a multiple of ``world``: unequal shards
    would weigh the ranks' mean losses unequally, and the step would no longer be the global batch's.
    """
    if ranks is None or ranks.world == 1:
        return dict(batch)
    if key not in batch or np.ndim(batch[key]) < 2:
        raise SpecError(f"a batch for {ranks.world} ranks needs a frame-major {key!r} of shape (F, P, ...)")
    frames, per_frame = np.shape(batch[key])[:2]
    if per_frame % ranks.world:
        fitting = max(per_frame - per_frame % ranks.world, ranks.world) * frames
        raise SpecError(
            f"the batch has {per_frame} samples per frame ({frames} frames), which {ranks.world} ranks cannot "
            f"share equally; choose a --batch-size whose samples per frame are a multiple of {ranks.world} "
            f"(e.g. {fitting})"
        )
    layout = (frames, per_frame)
    return {
        name: value[:, ranks.rank :: ranks.world] if np.ndim(value) >= 2 and np.shape(value)[:2] == layout else value
        for name, value in batch.items()
    }


@contextmanager
def process_group(ranks: Ranks, device: str | None) -> Iterator[None]:
    """Join the run's process group for the block (gloo on the CPU, NCCL on CUDA), unless this
    process already has one (then the caller owns it). The rendezvous is ``MASTER_ADDR``/``MASTER_PORT``."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    backend = "nccl" if device is not None and device.startswith("cuda") else "gloo"
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise SpecError(f"torch.distributed needs {name} in the environment (torchrun and --nproc set it)")
    if backend == "nccl":
        import torch

        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world, timeout=timedelta(seconds=timeout_s()))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    index: int, nproc: int, port: int, threads: int, errors: Any, target: Callable[..., Any], args: tuple
) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(index),
            "LOCAL_RANK": str(index),
            "WORLD_SIZE": str(nproc),
        }
    )
    # gloo looks up this host's name for its own address; on one machine the loopback is what works
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch

    torch.set_num_threads(threads)
    try:
        target(Ranks(index, nproc, index), *args)
    except ResFieldsError as err:  # bad input: the parent reports it as one line
        errors.put((index, type(err).__name__, str(err)))
        raise SystemExit(2) from None
    except BaseException:
        errors.put((index, "bug", traceback.format_exc()))
        raise SystemExit(1) from None


def launch(nproc: int, target: Callable[..., Any], args: tuple = ()) -> None:
    """Run ``target(ranks, *args)`` in ``nproc`` new processes on this machine (rendezvous on 127.0.0.1,
    a free port) and wait for them; ``target`` and ``args`` must pickle (a module-level function).

    Each process gets ``cpu_count // nproc`` torch threads (at least 1) unless ``OMP_NUM_THREADS`` is
    set. When one fails, the others get :data:`GRACE_S` seconds to end (a rank waiting in a collective
    on the failed one ends at once) and are then stopped; TrainingError names the rank that caused it
    with its error (its traceback, for an error that is not a library error). No process is left behind.
    """
    import multiprocessing.connection

    import torch.multiprocessing as mp

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise SpecError(f"nproc must be a positive number of processes, got {nproc!r}")
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // nproc))
    spawn = mp.get_context("spawn")
    errors = spawn.SimpleQueue()
    port = _free_port()
    processes = [
        spawn.Process(target=_worker, args=(i, nproc, port, threads, errors, target, args), daemon=False)
        for i in range(nproc)
    ]
    try:
        for process in processes:
            process.start()
        while any(p.is_alive() for p in processes) and not any(p.exitcode for p in processes):
            multiprocessing.connection.wait([p.sentinel for p in processes if p.is_alive()], timeout=1.0)
        if any(p.exitcode for p in processes):
            for process in processes:
                process.join(GRACE_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    failed = [(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode]
    if not failed:
        return
    reports = []
    while not errors.empty():
        reports.append(errors.get())
    if not reports:
        rank, code = failed[0]
        raise TrainingError(f"rank {rank} of {nproc} ended with exit code {code}; the other ranks were stopped")
    rank, kind, message = min(reports, key=_blame)
    detail = message.strip().splitlines()[-1] if kind == "bug" else message
    if kind == "bug":
        print(message, end="", file=sys.stderr, flush=True)  # a bug: keep its traceback in view
    raise TrainingError(f"rank {rank} of {nproc} failed: {detail}; the other ranks were stopped")


def _blame(report: tuple[int, str, str]) -> tuple[int, int]:
    """Sort key of the ranks' error reports, the cause first: a library error (bad input) before a bug,
    and either before a rank that only lost its peers (gloo/NCCL report a reset connection)."""
    _, kind, message = report
    lost_peer = any(text in message for text in ("Connection reset by peer", "Connection closed by peer", "NCCL"))
    return (int(lost_peer), int(kind == "bug"))
