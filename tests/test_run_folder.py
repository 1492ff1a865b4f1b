"""A run folder never loses work: what `fit` refuses to write into, what a kill, a full disk or a
failing evaluation leaves, that resuming is exact, and that `eval` reads only data it is given.

Kill tests run the save loop in processes forked from one helper process that has torch imported
(a fresh interpreter per kill would cost seconds), kill them with SIGKILL at random instants or at
every file-system call of a save, and check that what is left is a complete save (the previous one or
the new one) from which a resume ends bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_pattern_clip

from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.cli import main
from resfields.errors import CheckpointError, DataError, SpecError
from resfields.spec import LinearSpec
from resfields.tasks import get_task
from resfields.tasks.common.config import ModelConfig, RunConfig, TrainConfig, config_to_dict
from resfields.tasks.common.fit import evaluate_run, fit, load_run
from resfields.tasks.common.runfolder import RUN_FILES, checkpoint_folder, read_saved_run

VIDEO = get_task("video")


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """2 frames of 12x12 (SSIM's window is 11 pixels)."""
    path = tmp_path_factory.mktemp("clip") / "clip.npy"
    np.save(path, moving_pattern_clip(2, 12, 12))
    return str(path)


def _run(source: str, steps: int = 20, width: int = 8, **train) -> RunConfig:
    """The tiniest video run: one ResField layer of rank 1 in a 3-layer Siren, 32 samples a batch."""
    return RunConfig(
        "video",
        VIDEO.Data(source=source, n_frames=None, scale=1.0),
        ModelConfig(width=width, n_layers=3, resfield_layers=(1,), rank=1, omega0=10.0),
        TrainConfig(**{"steps": steps, "batch_size": 32, "lr": 3e-3, **train}),
    )


QUIET = {"progress": False, "media": False}


@pytest.fixture(scope="module", autouse=True)
def _one_thread_no_curve():
    """One torch thread (these fits are tiny; on a busy machine threads only wait for each other) and no
    loss-curve PNG (matplotlib would take most of each fit's time, and the curve is not tested here)."""
    import torch

    import resfields.tasks.common.fit as fit_module

    threads, plot = torch.get_num_threads(), fit_module._plot
    torch.set_num_threads(1)
    fit_module._plot = lambda *args, **kwargs: None
    yield
    torch.set_num_threads(threads)
    fit_module._plot = plot


def _cli(source: str, out: Path, *extra: str) -> list[str]:
    """``resfields fit`` of :func:`_run`."""
    argv = ["fit", "video", "--data", source, "--n-frames", "none", "--scale", "1", "--width", "8", "--n-layers", "3"]
    argv += ["--resfield-layers", "1", "--rank", "1", "--omega0", "10", "--batch-size", "32", "--lr", "0.003"]
    return [*argv, "--out", str(out), "--quiet", "--no-media", *extra]


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(folder).arrays


def _state(folder: Path) -> dict:
    return json.loads((folder / "training_state.json").read_text())


def _assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # bit-for-bit, not approximately


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("resfields: error: "), err
    return lines[0]


def _flatten(folder: Path, *, drop: tuple[str, ...] = ("files", "schedule")) -> None:
    """Turn a run folder into the layout of earlier versions: four plain files at the top, no .run."""
    for name in RUN_FILES:
        data = (folder / name).read_bytes()
        (folder / name).unlink()
        (folder / name).write_bytes(data)
    state = _state(folder)
    (folder / "training_state.json").write_text(json.dumps({k: v for k, v in state.items() if k not in drop}))
    shutil.rmtree(folder / ".run", ignore_errors=True)
    (folder / ".lock").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> Path:
    """An uninterrupted 20-step run, saved at every step (saving must not change the trajectory)."""
    out = tmp_path_factory.mktemp("reference")
    fit(_run(clip), out, save_every=1, **QUIET)
    return out


# ----------------------------------------------------------------------------- 1. what fit writes into


def test_fit_refuses_a_folder_holding_the_users_files(clip, tmp_path):
    (tmp_path / "config.json").write_text('{"mine": true}\n')
    with pytest.raises(CheckpointError, match=r"not empty and holds no run.*--overwrite"):
        fit(_run(clip, steps=2), tmp_path, **QUIET)
    assert (tmp_path / "config.json").read_text() == '{"mine": true}\n'
    assert main(_cli(clip, tmp_path, "--steps", "2")) == 2
    assert (tmp_path / "config.json").read_text() == '{"mine": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # refused before anything was added


def test_fit_refuses_an_existing_run_without_resume_or_overwrite(clip, tmp_path, capsys):
    fit(_run(clip, steps=3), tmp_path, **QUIET)
    before = _arrays(tmp_path)
    with pytest.raises(CheckpointError, match=r"already holds a run \(step 3 of 3\).*--resume.*--overwrite"):
        fit(_run(clip, steps=3, seed=1), tmp_path, **QUIET)
    capsys.readouterr()
    assert main(_cli(clip, tmp_path, "--steps", "3")) == 2
    assert "--resume" in _one_error_line(capsys.readouterr().err)
    _assert_same_arrays(_arrays(tmp_path), before)
    with pytest.raises(SpecError, match="exclude each other"):
        fit(_run(clip, steps=3), tmp_path, resume=True, overwrite=True, **QUIET)


def test_overwrite_replaces_a_run_and_writes_into_a_users_folder(clip, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(_cli(clip, tmp_path, "--steps", "3", "--overwrite")) == 0
    assert load_run(tmp_path)[1].metadata["step"] == 3
    assert (tmp_path / "notes.txt").read_text() == "keep me"  # --overwrite replaces the run files only
    # another width over an existing run: the new run replaces it, with its own metrics
    fit(_run(clip, steps=4, width=6), tmp_path, overwrite=True, **QUIET)
    run, ckpt = load_run(tmp_path)
    assert run.model.width == 6 and ckpt.metadata["step"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 4


def test_out_under_a_regular_file_is_one_error_line_before_training(clip, tmp_path, capsys, monkeypatch):
    (tmp_path / "somefile").write_text("x")
    prepared = []
    monkeypatch.setattr(VIDEO, "prepare", lambda self: prepared.append(1))
    with pytest.raises(CheckpointError, match="cannot create or write the run folder"):
        fit(_run(clip), tmp_path / "somefile" / "run", **QUIET)
    assert main(_cli(clip, tmp_path / "somefile" / "run", "--steps", "2")) == 2
    assert "somefile" in _one_error_line(capsys.readouterr().err)
    assert main(_cli(clip, tmp_path / "somefile", "--steps", "2")) == 2
    assert "not a folder" in _one_error_line(capsys.readouterr().err)
    assert prepared == []  # refused before any data was read or step trained


def _mount_tmpfs(folder: Path, options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a small tmpfs")
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield lambda folder, options: (_mount_tmpfs(folder, options), mounted.append(folder))
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_read_only_out_is_refused_before_training(clip, tmp_path, mounts, monkeypatch):
    mounts(tmp_path / "ro", "size=1m,ro")
    prepared = []
    monkeypatch.setattr(VIDEO, "prepare", lambda self: prepared.append(1))
    with pytest.raises(CheckpointError, match="Read-only file system"):
        fit(_run(clip), tmp_path / "ro" / "run", **QUIET)
    assert prepared == []


# ----------------------------------------------------------------------------- 2. failures after training


class Boom(RuntimeError):
    pass


def test_failing_evaluation_keeps_the_trained_run(clip, tmp_path, monkeypatch):
    real = VIDEO.evaluate

    def failing(self, predict):
        raise DataError("evaluation needs held-out pixels")

    monkeypatch.setattr(VIDEO, "evaluate", failing)
    with pytest.raises(DataError, match=r"evaluation needs held-out pixels.*saved in"):
        fit(_run(clip, steps=6), tmp_path, **QUIET)
    assert load_run(tmp_path)[1].metadata["step"] == 6 and len(_state(tmp_path)["history"]["loss"]) == 6
    monkeypatch.setattr(VIDEO, "evaluate", real)
    assert evaluate_run(tmp_path, backend="numpy")["metrics"]["train_psnr"] > 0


@pytest.mark.parametrize("trigger", [{"save_every": 5}, {"save_every": None, "save_interval_s": 1e-9}])
def test_periodic_saves_bound_what_a_crash_loses(clip, tmp_path, reference, monkeypatch, trigger):
    real = VIDEO.sample

    def crash_at_13(self, rng, batch_size, step=0):
        if step == 13:
            raise Boom("the machine went away")
        return real(self, rng, batch_size, step)

    monkeypatch.setattr(VIDEO, "sample", crash_at_13)
    with pytest.raises(Boom):
        fit(_run(clip), tmp_path, **trigger, **QUIET)
    expected = 10 if trigger["save_every"] else 13
    assert load_run(tmp_path)[1].metadata["step"] == expected
    monkeypatch.setattr(VIDEO, "sample", real)
    fit(_run(clip), tmp_path, resume=True, **QUIET)
    _assert_same_arrays(_arrays(tmp_path), _arrays(reference))
    assert _state(tmp_path)["history"] == _state(reference)["history"]


def test_default_save_interval_is_two_minutes():
    import inspect

    from resfields.tasks.common.fit import SAVE_INTERVAL_S

    assert SAVE_INTERVAL_S == 120.0
    assert inspect.signature(fit).parameters["save_interval_s"].default == SAVE_INTERVAL_S


def test_full_disk_keeps_the_last_save_and_says_so_in_one_line(clip, tmp_path, mounts, monkeypatch, capsys):
    disk = tmp_path / "disk"
    mounts(disk, "size=2m")
    out = disk / "run"
    real = VIDEO.sample

    def fill_disk_at_12(self, rng, batch_size, step=0):
        if step == 12:
            with open(disk / "filler", "wb", buffering=0) as handle:
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                except OSError:
                    pass
        return real(self, rng, batch_size, step)

    monkeypatch.setattr(VIDEO, "sample", fill_disk_at_12)
    reference_run = _run(clip)
    assert main(_cli(clip, out, "--save-every", "5", "--steps", "20")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "step 10 is intact" in line, line
    assert load_run(out)[0] == reference_run and load_run(out)[1].metadata["step"] == 10
    assert [p.name for p in (out / ".run").iterdir() if p.name.startswith(".")] == []  # no half-written save
    (disk / "filler").unlink()
    monkeypatch.setattr(VIDEO, "sample", real)
    fit(reference_run, out, resume=True, **QUIET)
    with_gap = tmp_path / "uninterrupted"
    fit(reference_run, with_gap, **QUIET)
    _assert_same_arrays(_arrays(out), _arrays(with_gap))


# ----------------------------------------------------------------------------- 3. a unit, under kills


ZYGOTE = textwrap.dedent(
    """
    import json, os, signal, sys, traceback

    import matplotlib

    matplotlib.use("Agg")
    import torch
    import torch._dynamo  # noqa: F401  (imported by Adam on first use: here once, not in every child)

    import resfields.backends.torch.training  # noqa: F401
    import resfields.tasks.common.fit as fit_module
    import resfields.tasks.video.task  # noqa: F401
    from resfields.tasks.common.fit import fit, run_from_dict

    fit_module._plot = lambda *args, **kwargs: None  # as in the test module

    CALLS = ("open", "fsync", "mkdir", "rename", "replace", "symlink", "unlink", "rmdir")


    def count_calls(crash_at, log):
        count = [0]

        def wrap(name):
            real = getattr(os, name)

            def call(*args, **kwargs):
                count[0] += 1
                log.append([name, str(args[0]) if args else ""])
                if count[0] == crash_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            setattr(os, name, call)

        for name in CALLS:
            wrap(name)


    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                torch.set_num_threads(1)
                log = []
                if cmd.get("log") is not None:
                    count_calls(cmd.get("crash_at", 0), log)
                fit(run_from_dict(cmd["run"]), cmd["out"], progress=False, media=False, **cmd["kwargs"])
                if cmd.get("log") is not None:
                    with open(cmd["log"], "w") as handle:
                        json.dump(log, handle)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
    """
)


class Zygote:
    """A helper process with torch imported that runs each `fit` in a forked child, to be killed at will."""

    def __init__(self, folder: Path) -> None:
        script = folder / "zygote.py"
        script.write_text(ZYGOTE)
        self.log = folder / "zygote.err"
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            bufsize=1,
        )

    def start(self, run: RunConfig, out: Path, **cmd) -> int:
        kwargs = cmd.pop("kwargs", {})
        line = json.dumps({"run": config_to_dict(run), "out": str(out), "kwargs": kwargs, **cmd})
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        reply = self.proc.stdout.readline()
        assert reply, self.log.read_text()
        return json.loads(reply)["status"]

    def run(self, run: RunConfig, out: Path, **cmd) -> int:
        self.start(run, out, **cmd)
        return self.wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def kill_root(tmp_path_factory) -> Path:
    """Where killed runs write: tmpfs when there is one. A SIGKILL leaves the page cache intact, so the
    fsyncs a disk would spend milliseconds on change nothing about what such a kill can leave."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path_factory.mktemp("kills")
        return
    folder = Path(tempfile.mkdtemp(prefix="resfields-kills-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def kill_clip(kill_root) -> str:
    """The kill tests' own copy of the clip, next to their runs (a shared /tmp may be tidied meanwhile)."""
    path = kill_root / "clip.npy"
    np.save(path, moving_pattern_clip(2, 12, 12))
    return str(path)


@pytest.fixture
def kill_dir(kill_root, request) -> Path:
    folder = kill_root / request.node.name.replace("[", "-").replace("]", "").replace(" ", "_")
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


@pytest.fixture(scope="module")
def zygote_reference(zygote, kill_clip, kill_root) -> tuple[Path, float]:
    """The uninterrupted run, in a child of the zygote (the same environment as every killed run), and
    how long it takes (the second time: the first also fills caches)."""
    durations = []
    for attempt in ("warm-up", "reference"):
        t0 = time.perf_counter()
        assert zygote.run(_run(kill_clip), kill_root / attempt, kwargs={"save_every": 1}) == 0, zygote.log.read_text()
        durations.append(time.perf_counter() - t0)
    return kill_root / "reference", durations[-1]


@pytest.fixture(scope="module")
def old_run(zygote, kill_clip, kill_root) -> Path:
    """An earlier run of another width, in the layout of earlier versions, for --overwrite to replace."""
    out = kill_root / "old_run"
    assert zygote.run(_run(kill_clip, steps=5, width=6), out) == 0, zygote.log.read_text()
    _flatten(out)
    return out


def _check_left_state(out: Path, reference: Path, old: Path | None) -> str:
    """What a kill left in ``out``: 'none', 'old' or 'new' (a complete save of the new run); asserts that
    it is exactly one of those (every file of one save, loadable from the top as from the save)."""
    if old is not None and load_checkpoint(out).spec == load_checkpoint(old).spec:
        _assert_same_arrays(_arrays(out), _arrays(old))
        assert load_run(out)[1].metadata == load_run(old)[1].metadata
        return "old"
    if old is None and checkpoint_folder(out) == out:
        assert not (out / "config.json").is_file()  # nothing saved yet: no half of a run either
        return "none"
    saved = read_saved_run(checkpoint_folder(out))  # hashes and steps of all four files agree
    _assert_same_arrays(_arrays(out), saved.checkpoint.arrays)
    step = saved.state["step"]
    assert saved.state["history"]["loss"] == _state(reference)["history"]["loss"][:step]
    return "new"


def _finish(zygote: Zygote, run: RunConfig, out: Path, left: str, reference: Path) -> None:
    flags = {"new": {"resume": True}, "old": {"overwrite": True}, "none": {}}[left]
    assert zygote.run(run, out, kwargs=flags) == 0, zygote.log.read_text()
    _assert_same_arrays(_arrays(out), _arrays(reference))
    assert _state(out)["history"] == _state(reference)["history"]


def _kill_trials(zygote, clip, tmp_path, zygote_reference, old_run, n_kills: int) -> dict[str, int]:
    reference, duration = zygote_reference
    rng = np.random.default_rng(2024)
    seen: dict[str, int] = {}
    for trial in range(n_kills):
        out = tmp_path / f"kill{trial}"
        old = old_run if trial % 2 else None  # every other kill replaces an earlier run (--overwrite)
        if old is not None:
            shutil.copytree(old, out, symlinks=True)
        pid = zygote.start(_run(clip), out, kwargs={"save_every": 1, "overwrite": old is not None})
        time.sleep(rng.uniform(0.0, duration))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = zygote.wait()
        assert status in (0, -signal.SIGKILL), zygote.log.read_text()
        left = _check_left_state(out, reference, old)
        seen[left] = seen.get(left, 0) + 1
        _finish(zygote, _run(clip), out, left, reference)
    return seen


def test_sigkill_at_random_instants_leaves_old_or_new_run(zygote, kill_clip, kill_dir, zygote_reference, old_run):
    seen = _kill_trials(zygote, kill_clip, kill_dir, zygote_reference, old_run, n_kills=20)
    assert seen.get("new", 0) >= 5, seen  # the kills did land inside the save loop


@pytest.mark.slow
def test_sigkill_at_random_instants_many_times(zygote, kill_clip, kill_dir, zygote_reference, old_run):
    _kill_trials(zygote, kill_clip, kill_dir, zygote_reference, old_run, n_kills=200)


def _save_calls(zygote, clip, folder: Path, old: Path | None, steps: int) -> list[list[str]]:
    """The file-system calls of an uninterrupted fit (every step saved), in order."""
    out = folder / "count"
    if old is not None:
        shutil.copytree(old, out, symlinks=True)
    log = folder / "calls.json"
    kwargs = {"save_every": 1, "overwrite": old is not None}
    assert zygote.run(_run(clip, steps=steps), out, kwargs=kwargs, log=str(log)) == 0, zygote.log.read_text()
    return json.loads(log.read_text())


@pytest.mark.parametrize("case", ["a save that drops the oldest", "overwrite of an older run"])
def test_sigkill_at_every_call_of_a_save(zygote, kill_clip, kill_dir, case):
    """Crash points by construction: a kill right before each file-system call of one save. For
    --overwrite that covers adopting the earlier run's plain files and replacing them by the new run."""
    steps = 3
    old = None
    if case != "a save that drops the oldest":
        old = kill_dir / "old"
        assert zygote.run(_run(kill_clip, steps=2, width=6), old) == 0
        _flatten(old)
    reference = kill_dir / "reference"
    assert zygote.run(_run(kill_clip, steps=steps), reference) == 0
    calls = _save_calls(zygote, kill_clip, kill_dir, old, steps)
    staging = [i for i, (name, arg) in enumerate(calls, 1) if name == "mkdir" and ".staging-" in arg]
    # the third save (steps 1 and 2 are saved: it also removes the first), or everything from opening
    # an older-layout run through adopting it to the first save of the new run
    first, last = (staging[2], staging[3]) if old is None else (1, staging[2])
    for crash_at in range(first, last):
        out = kill_dir / f"crash{crash_at}"
        if old is not None:
            shutil.copytree(old, out, symlinks=True)
        kwargs = {"save_every": 1, "overwrite": old is not None}
        log = str(kill_dir / "unused.json")
        status = zygote.run(_run(kill_clip, steps=steps), out, kwargs=kwargs, log=log, crash_at=crash_at)
        assert status == -signal.SIGKILL, (crash_at, calls[crash_at - 1])
        left = _check_left_state(out, reference, old)
        assert left in (("old", "new") if old is not None else ("new",)), (crash_at, calls[crash_at - 1])
        _finish(zygote, _run(kill_clip, steps=steps), out, left, reference)


def test_a_second_writer_is_refused_at_once(zygote, kill_clip, tmp_path, capsys):
    out = tmp_path / "run"
    pid = zygote.start(_run(kill_clip, steps=10_000_000), out)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            lock = out / ".lock"
            if lock.is_file() and lock.read_text().strip() == str(pid):
                break
            time.sleep(0.02)
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError, match=rf"being written by another `resfields fit` \(pid {pid}\)"):
            fit(_run(kill_clip, steps=2), out, overwrite=True, **QUIET)
        assert main(_cli(kill_clip, out, "--steps", "2", "--resume")) == 2
        assert "being written by another" in _one_error_line(capsys.readouterr().err)
        assert time.perf_counter() - t0 < 5.0
    finally:
        os.kill(pid, signal.SIGKILL)
        assert zygote.wait() == -signal.SIGKILL
    fit(_run(kill_clip, steps=2), out, **QUIET)  # the lock died with its process: nothing stale is left


def test_damaged_saves_are_refused_naming_the_files(clip, tmp_path):
    out = tmp_path / "run"
    fit(_run(clip, steps=4), out, stop_at=2, **QUIET)
    state_arrays = checkpoint_folder(out) / "training_state.safetensors"
    data = bytearray(state_arrays.read_bytes())
    data[-1] ^= 0xFF
    state_arrays.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"training_state\.safetensors do not match the SHA-256"):
        fit(_run(clip, steps=4), out, resume=True, **QUIET)


def test_older_layout_half_written_state_is_a_clear_error(clip, tmp_path, capsys):
    out = tmp_path / "run"
    fit(_run(clip, steps=4), out, stop_at=2, **QUIET)
    _flatten(out)
    text = (out / "training_state.json").read_text()
    (out / "training_state.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"training_state\.json: corrupt or half-written"):
        fit(_run(clip, steps=4), out, resume=True, **QUIET)
    assert main(_cli(clip, out, "--steps", "4", "--resume")) == 2
    assert "half-written" in _one_error_line(capsys.readouterr().err)
    # the older layout's torn save: weights and config of a later step than the training state
    fit(_run(clip, steps=4), tmp_path / "later", **QUIET)
    _flatten(tmp_path / "later")
    (out / "training_state.json").write_text(text)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tmp_path / "later" / name, out / name)
    with pytest.raises(CheckpointError, match=r"at step 2 but config\.json is at step 4.*different saves"):
        fit(_run(clip, steps=4), out, resume=True, **QUIET)


def test_older_layout_is_adopted_and_resumes_exactly(clip, tmp_path, reference):
    out = tmp_path / "run"
    fit(_run(clip), out, stop_at=7, **QUIET)
    _flatten(out)
    fit(_run(clip), out, resume=True, **QUIET)
    assert all((out / name).is_symlink() for name in RUN_FILES)
    _assert_same_arrays(_arrays(out), _arrays(reference))


def test_killed_saves_litter_is_removed_by_the_next_save(clip, tmp_path):
    out = tmp_path / "run"
    fit(_run(clip, steps=4), out, stop_at=2, **QUIET)
    (out / ".run").mkdir(exist_ok=True)
    (out / ".run" / ".staging-dead").mkdir()
    (out / ".run" / ".staging-dead" / "model.safetensors").write_bytes(b"half")
    (out / ".config.json.abc123.tmp").write_text("half")
    (out / ".run" / ".current-00000099.tmp").symlink_to("00000099")
    fit(_run(clip, steps=4), out, resume=True, **QUIET)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".lock", ".run"]
    assert [p.name for p in (out / ".run").iterdir() if p.name.startswith(".")] == []
    assert len([p for p in (out / ".run").iterdir() if p.name.isdigit()]) == 2  # the save and the one before


def test_save_checkpoint_removes_temporaries_of_dead_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".model.safetensors.{dead.pid}.x1.tmp").write_bytes(b"half")
        (tmp_path / f".config.json.{alive.pid}.x2.tmp").write_bytes(b"in progress")
        spec = LinearSpec(2, 3)
        save_checkpoint(tmp_path, spec, {"weight": np.zeros((3, 2)), "bias": np.zeros(3)})
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [f".config.json.{alive.pid}.x2.tmp", "config.json", "model.safetensors"]
    finally:
        alive.kill()
        alive.wait()


# ----------------------------------------------------------------------------- 4. resuming


def test_resume_stopped_run_is_bit_exact(clip, tmp_path, reference):
    out = tmp_path / "run"
    fit(_run(clip), out, stop_at=9, **QUIET)
    fit(_run(clip), out, resume=True, **QUIET)
    _assert_same_arrays(_arrays(out), _arrays(reference))
    assert _state(out)["history"] == _state(reference)["history"]
    ours = read_saved_run(checkpoint_folder(out)).optimizer
    theirs = read_saved_run(checkpoint_folder(reference)).optimizer
    _assert_same_arrays(ours, theirs)


def test_resume_refuses_fewer_steps_than_done(clip, tmp_path, capsys):
    fit(_run(clip, steps=10), tmp_path, **QUIET)
    with pytest.raises(SpecError, match="trained 10 steps, more than --steps 3; pass --steps 10 or more"):
        fit(_run(clip, steps=3), tmp_path, resume=True, **QUIET)
    capsys.readouterr()
    assert main(_cli(clip, tmp_path, "--steps", "3", "--resume")) == 2
    assert "never repeats steps" in _one_error_line(capsys.readouterr().err)
    assert load_run(tmp_path)[1].metadata["step"] == 10 and _state(tmp_path)["history"]["step"] == list(range(10))


def test_resume_refuses_changed_options_naming_them(clip, tmp_path, capsys):
    assert main(_cli(clip, tmp_path, "--steps", "4")) == 0
    capsys.readouterr()
    assert main(_cli(clip, tmp_path, "--steps", "6", "--resume", "--width", "16", "--lr", "0.01")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--width 16 (the run has 8)" in line and "--lr 0.01 (the run has 0.003)" in line, line
    with pytest.raises(SpecError, match=r"train\.batch_size: stored 32, requested 64"):
        fit(_run(clip, steps=6, batch_size=64), tmp_path, resume=True, **QUIET)
    # unchanged options may be repeated; without --steps the run continues to its own budget
    assert main(["fit", "video", "--out", str(tmp_path), "--resume", "--quiet", "--no-media", "--width", "8"]) == 0
    assert load_run(tmp_path)[1].metadata["step"] == 4


def test_more_steps_continue_with_the_new_schedule_and_say_so(clip, tmp_path):
    fit(_run(clip, steps=10), tmp_path, **QUIET)
    fit(_run(clip, steps=20), tmp_path, resume=True, **QUIET)
    state = _state(tmp_path)
    assert state["history"]["step"] == list(range(20))  # no step repeated, none skipped
    schedule = [{"from_step": 0, "steps": 10}, {"from_step": 10, "steps": 20}]
    assert state["schedule"] == schedule and load_run(tmp_path)[1].metadata["schedule"] == schedule
    assert load_run(tmp_path)[0].train.steps == 20


def test_progress_bar_counts_the_whole_run_after_a_resume(clip, tmp_path, capsys):
    fit(_run(clip, steps=10), tmp_path, stop_at=5, **QUIET)
    capsys.readouterr()
    fit(_run(clip, steps=10), tmp_path, resume=True, progress=True, media=False)
    err = capsys.readouterr().err
    # "10it" alone would be a bar without a total; a rate such as "364.10it/s" is not that
    assert "10/10" in err and "/5 " not in err and not re.search(r"(?<![\d.])10it", err), err[-300:]


# ----------------------------------------------------------------------------- 6, 7. eval


def test_eval_reads_no_data_path_stored_in_a_checkpoint(clip, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli(clip, out, "--steps", "2")) == 0
    # a checkpoint from elsewhere whose run config points at a private file on this machine
    private = tmp_path / "private.npy"
    np.save(private, np.ones((2, 12, 12, 3), np.float32))
    config = json.loads((out / "config.json").read_text())
    config["metadata"]["run"]["data"]["source"] = str(private)
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["eval", str(out), "--media", "--out", str(tmp_path / "eval")]) == 2
    assert "--data PATH" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "eval" / "media").exists()
    assert main(["eval", str(out), "--data", clip, "--out", str(tmp_path / "eval")]) == 0
    assert main(["eval", str(out), "--set", f"source={clip}", "--backend", "numpy"]) == 0
    with pytest.raises(DataError, match="--data PATH"):
        evaluate_run(out, stored_source=False)


def test_eval_set_with_a_bad_value_is_one_line(clip, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_cli(clip, out, "--steps", "2")) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--set", "n_frames=abc"]) == 2
    assert "--set n_frames" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(SpecError, match="expected an integer"):
        evaluate_run(out, data_overrides={"source": clip, "n_frames": "abc"})


# ----------------------------------------------------------------------------- 8. what a run folder may touch


def test_a_run_symlink_is_refused_and_its_target_kept(tmp_path):
    from resfields.tasks.common.runfolder import RunFolder

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    (victim / "chapters").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / ".run").symlink_to("../victim")
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(CheckpointError, match=r"\.run is not a folder of its own"):
            RunFolder.open(out, **kwargs)
    assert sorted(p.name for p in victim.iterdir()) == ["chapters", "thesis.tex"]
    assert (victim / "thesis.tex").read_text() == "years of work"


def test_collect_removes_only_names_the_run_folder_makes(clip, tmp_path):
    out = tmp_path / "run"
    fit(_run(clip, steps=4), out, stop_at=2, **QUIET)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    saves = out / ".run"
    (saves / "notes.txt").write_text("mine")
    (saves / "drafts").mkdir()
    (saves / "drafts" / "a.txt").write_text("mine too")
    (saves / "00000077").symlink_to(victim)  # a save-like name that is a link: unlinked, never emptied
    (saves / ".staging-linked").symlink_to(victim)
    fit(_run(clip, steps=4), out, resume=True, **QUIET)
    assert (saves / "notes.txt").read_text() == "mine" and (saves / "drafts" / "a.txt").read_text() == "mine too"
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert not (saves / "00000077").is_symlink() and not (saves / ".staging-linked").is_symlink()


def test_a_lock_symlink_is_refused_and_its_target_kept(clip, tmp_path, capsys):
    victim = tmp_path / "thesis.tex"
    victim.write_text("years of work")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(CheckpointError, match=r"\.lock.*not a regular file"):
        fit(_run(clip, steps=2), out, **QUIET)
    assert main(_cli(clip, out, "--steps", "2")) == 2
    assert ".lock" in _one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "years of work"
    (out / ".lock").unlink()
    (out / ".lock").mkdir()
    with pytest.raises(CheckpointError, match=r"\.lock"):
        fit(_run(clip, steps=2), out, **QUIET)


def _deep_json(depth: int = 100_000) -> str:
    return '{"metadata": ' + "[" * depth + "]" * depth + "}"


def test_deeply_nested_json_in_a_run_folder_is_a_checkpoint_error(clip, tmp_path):
    from resfields.tasks.common.runfolder import _describe_run, _holds_plain_run

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(_deep_json())
    assert _holds_plain_run(plain) is False
    assert _describe_run(plain) == ""
    with pytest.raises(CheckpointError):
        fit(_run(clip, steps=2), plain, **QUIET)
    out = tmp_path / "run"
    fit(_run(clip, steps=2), out, **QUIET)
    save = checkpoint_folder(out)
    (save / "training_state.json").unlink()
    (save / "training_state.json").write_text(_deep_json())
    with pytest.raises(CheckpointError, match=r"training_state\.json.*nested deeper"):
        read_saved_run(save)


def test_the_recorded_files_of_a_save_are_only_its_own(clip, tmp_path):
    import hashlib

    out = tmp_path / "run"
    fit(_run(clip, steps=2), out, **QUIET)
    save = checkpoint_folder(out)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    state = _state(save)
    for name in (str(secret), "../../../secret.txt", "./config.json"):
        files = {**state["files"], name: hashlib.sha256(secret.read_bytes()).hexdigest()}
        (save / "training_state.json").unlink()
        (save / "training_state.json").write_text(json.dumps({**state, "files": files}))
        with pytest.raises(CheckpointError, match="'files' must map"):
            read_saved_run(save)
    (save / "training_state.json").unlink()
    (save / "training_state.json").write_text(json.dumps(state))
    read_saved_run(save)


@pytest.mark.parametrize("where", ["absolute", "relative out", "not a save name", "a link to a save"])
def test_current_must_name_a_save_inside_the_run_folder(clip, tmp_path, capsys, where):
    other = tmp_path / "other"
    fit(_run(clip, steps=2, width=6), other, **QUIET)
    out = tmp_path / "run"
    fit(_run(clip, steps=2), out, **QUIET)
    foreign = checkpoint_folder(other)
    current = out / ".run" / "current"
    target = {
        "absolute": str(foreign),
        "relative out": f"../../other/.run/{foreign.name}",
        "not a save name": "../.run/" + checkpoint_folder(out).name,
        "a link to a save": "00000099",
    }[where]
    if where == "a link to a save":
        (out / ".run" / "00000099").symlink_to(foreign)
    current.unlink()
    current.symlink_to(target)
    with pytest.raises(CheckpointError, match=r"\.run/current"):
        checkpoint_folder(out)
    with pytest.raises(CheckpointError, match=r"\.run/current"):
        load_run(out)
    capsys.readouterr()
    assert main(_cli(clip, out, "--steps", "4", "--resume")) == 2
    assert ".run/current" in _one_error_line(capsys.readouterr().err)
    assert main(["eval", str(out), "--data", clip]) == 2
    assert ".run/current" in _one_error_line(capsys.readouterr().err)


def test_a_users_tmp_files_at_the_top_are_kept(clip, tmp_path):
    out = tmp_path / "run"
    fit(_run(clip, steps=4), out, stop_at=2, **QUIET)
    (out / ".notes.tmp").write_text("mine")
    (out / ".cache.tmp").mkdir()
    (out / ".cache.tmp" / "a").write_text("mine too")
    (out / ".config.json.dir.tmp").mkdir()  # a folder, though named like a temporary file: not ours
    (out / ".model.safetensors.123.abc.tmp").write_bytes(b"half")
    (out / ".metrics.json.k2j4h5.tmp").write_bytes(b"half")
    fit(_run(clip, steps=4), out, resume=True, **QUIET)
    assert (out / ".notes.tmp").read_text() == "mine" and (out / ".cache.tmp" / "a").read_text() == "mine too"
    assert (out / ".config.json.dir.tmp").is_dir()
    assert not (out / ".model.safetensors.123.abc.tmp").exists() and not (out / ".metrics.json.k2j4h5.tmp").exists()


def test_a_diverging_fit_is_one_error_line_and_keeps_its_last_save(clip, tmp_path, capsys, monkeypatch):
    from resfields.backends.torch.training import TorchTrainer
    from resfields.errors import TrainingError

    # no learning rate in (0, 1) makes this tiny Siren diverge within a few steps: the loss goes NaN at step 3
    real, calls = TorchTrainer.step, []

    def diverging(self, batch, lr_factor=1.0):
        calls.append(1)
        loss = real(self, batch, lr_factor)
        return float("nan") if len(calls) > 3 else loss

    monkeypatch.setattr(TorchTrainer, "step", diverging)
    with pytest.raises(TrainingError, match=r"loss became nan at step 3; lower the learning rate.*nothing was saved"):
        fit(_run(clip, steps=10), tmp_path / "fresh", **QUIET)
    assert issubclass(TrainingError, FloatingPointError)
    calls.clear()
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(_cli(clip, out, "--steps", "10", "--save-every", "2")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "lower the learning rate" in line and "the save of step 2 is intact" in line, line
    assert read_saved_run(checkpoint_folder(out)).state["step"] == 2
