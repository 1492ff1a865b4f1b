"""Training on several processes (torch DDP, gloo on 127.0.0.1): a 2-rank run computes what a 1-rank
run of the same global batch computes, resumes from its own folder, and a failing rank ends the run
with one message instead of a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_pattern_clip
from hypothesis import given
from hypothesis import strategies as st

from resfields.checkpoint import load_checkpoint
from resfields.cli import main
from resfields.errors import DataError, SpecError, TrainingError
from resfields.tasks import get_task
from resfields.tasks.common.config import ModelConfig, RunConfig, TrainConfig
from resfields.tasks.common.distributed import (
    Ranks,
    launch,
    process_group,
    ranks_from_environment,
    shard_batch,
    timeout_s,
)
from resfields.tasks.common.fit import fit
from resfields.tasks.common.runfolder import checkpoint_folder

torch = pytest.importorskip("torch")

VIDEO = get_task("video")
STEPS = 6
QUIET = {"progress": False, "media": False}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip") / "clip.npy"
    np.save(path, moving_pattern_clip(2, 12, 12))
    return str(path)


def _run(source: str) -> RunConfig:
    """A tiny video run: 2 frames, one ResField layer, 16 samples per frame (8 per rank on 2 ranks)."""
    return RunConfig(
        "video",
        VIDEO.Data(source=source, n_frames=None, scale=1.0),
        ModelConfig(width=16, n_layers=3, resfield_layers=(1,), rank=2, omega0=10.0),
        TrainConfig(steps=STEPS, batch_size=32, lr=3e-3),
    )


def _history(folder: Path) -> list[float]:
    return json.loads((checkpoint_folder(folder) / "training_state.json").read_text())["history"]["loss"]


def _parameters(folder: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(checkpoint_folder(folder)).arrays


def _assert_same_run(a: Path, b: Path, rtol: float = 1e-5, parameter_rtol: float = 1e-4) -> None:
    """Same loss curve to ``rtol``; same parameters to ``parameter_rtol`` of each tensor's largest entry.

    The parameters get the looser bound because Adam divides by sqrt(v): a float32 difference in the
    order the two ranks' gradients are summed, in a component whose gradient is near zero, moves the
    update by up to ~1e-5 of the tensor's scale (seen on an AVX-512 Xeon). A wrong shard moves it by
    about the learning rate, 3e-3, far above either bound."""
    np.testing.assert_allclose(_history(a), _history(b), rtol=rtol)
    pa, pb = _parameters(a), _parameters(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        scale = max(float(np.abs(pa[name]).max()), 1e-12)
        assert float(np.abs(pa[name] - pb[name]).max()) <= parameter_rtol * scale, name


@pytest.fixture(scope="module")
def one_rank(clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    torch.set_num_threads(1)
    fit(_run(clip), out, **QUIET)
    return out


# launch() pickles its target by reference: module-level functions the spawned ranks can import
def _fit_rank(ranks: Ranks, run: RunConfig, out: str, stop_at: int | None, resume: bool) -> None:
    fit(run, out, ranks=ranks, stop_at=stop_at, resume=resume, **QUIET)


def _fail_on_rank_one(ranks: Ranks) -> None:
    import torch.distributed as dist

    with process_group(ranks, None):
        if ranks.rank == 1:
            raise DataError("rank one has no data")
        dist.barrier()  # rank 0 would wait here for ever without the launcher


def test_two_ranks_through_the_cli_match_one_rank(clip, one_rank, tmp_path, capfd):
    out = tmp_path / "two"
    argv = ["fit", "video", "--data", clip, "--n-frames", "none", "--scale", "1", "--width", "16"]
    argv += ["--n-layers", "3", "--resfield-layers", "1", "--rank", "2", "--omega0", "10", "--steps", str(STEPS)]
    argv += ["--batch-size", "32", "--lr", "3e-3", "--out", str(out), "--no-media", "--quiet", "--nproc", "2"]
    assert main(argv) == 0
    printed = capfd.readouterr().out  # the ranks' own processes print: read the file descriptor
    assert "(2 processes)" in printed and "run folder:" in printed
    _assert_same_run(one_rank, out)
    assert json.loads((out / "metrics.json").read_text())["steps"] == STEPS  # rank 0 evaluated and wrote


def test_a_two_rank_run_resumes_from_its_folder(clip, one_rank, tmp_path):
    out = str(tmp_path / "two")
    launch(2, _fit_rank, (_run(clip), out, 2, False))
    assert len(_history(Path(out))) == 2
    launch(2, _fit_rank, (_run(clip), out, None, True))
    _assert_same_run(one_rank, Path(out))


def test_a_failing_rank_ends_the_run_with_its_message():
    t0 = time.perf_counter()
    with pytest.raises(TrainingError, match=r"rank 1 of 2 failed: rank one has no data; the other ranks were stopped"):
        launch(2, _fail_on_rank_one)
    assert time.perf_counter() - t0 < 60  # rank 0 was stopped, not left waiting in its barrier


def test_tinygrad_has_no_distributed_training(clip, tmp_path, capsys):
    argv = ["fit", "video", "--data", clip, "--backend", "tinygrad", "--nproc", "2", "--out", str(tmp_path / "t")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "resfields: error: --nproc 2 needs --backend torch (DistributedDataParallel); tinygrad has none"
    )
    with pytest.raises(SpecError, match="needs --backend torch"):
        fit(_run(clip), tmp_path / "u", backend="tinygrad", ranks=Ranks(0, 2), **QUIET)
    assert not (tmp_path / "u").exists()  # refused before the folder was touched


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_nproc_must_be_a_positive_count(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "video", "--nproc", value])
    assert exit_info.value.code == 2
    assert "--nproc: expected a positive whole number" in capsys.readouterr().err


def test_nproc_under_torchrun_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert main(["fit", "video", "--nproc", "2", "--out", str(tmp_path / "x")]) == 2
    assert "under torchrun leave it out (torchrun already started 4)" in capsys.readouterr().err


def test_ranks_from_the_environment():
    assert ranks_from_environment({}) is None
    assert ranks_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert ranks_from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    with pytest.raises(SpecError, match="need RANK and WORLD_SIZE"):
        ranks_from_environment({"WORLD_SIZE": "2"})
    with pytest.raises(SpecError, match="out of range"):
        ranks_from_environment({"WORLD_SIZE": "2", "RANK": "2"})


def test_collective_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv("RESFIELDS_DIST_TIMEOUT_S", raising=False)
    assert timeout_s() == 1800.0
    monkeypatch.setenv("RESFIELDS_DIST_TIMEOUT_S", "30")
    assert timeout_s() == 30.0
    for bad in ("0", "-1", "inf", "soon"):
        monkeypatch.setenv("RESFIELDS_DIST_TIMEOUT_S", bad)
        with pytest.raises(SpecError, match="RESFIELDS_DIST_TIMEOUT_S"):
            timeout_s()


@given(
    frames=st.integers(1, 4),
    per_rank=st.integers(1, 5),
    world=st.integers(1, 4),
    extra=st.integers(0, 2),
)
def test_shards_split_every_frame_and_rebuild_the_batch(frames, per_rank, world, extra):
    per_frame = per_rank * world
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(frames, per_frame, 3)),
        "target": rng.normal(size=(frames, per_frame, 2 + extra)),
        "frame_ids": np.arange(frames)[:, None],  # one key per frame: every rank gets it whole
        "window": np.ones(5),
    }
    shards = [shard_batch(batch, Ranks(r, world), "x") for r in range(world)]
    for shard in shards:
        assert shard["x"].shape == (frames, per_rank, 3)
        np.testing.assert_array_equal(shard["frame_ids"], batch["frame_ids"])
        np.testing.assert_array_equal(shard["window"], batch["window"])
    rebuilt = np.empty_like(batch["target"])
    for r, shard in enumerate(shards):
        rebuilt[:, r::world] = shard["target"]
    np.testing.assert_array_equal(rebuilt, batch["target"])


def test_a_batch_the_ranks_cannot_share_equally_is_refused():
    batch = {"x": np.zeros((14, 585, 4))}
    with pytest.raises(SpecError, match=r"585 samples per frame \(14 frames\).*multiple of 2 \(e.g. 8176\)"):
        shard_batch(batch, Ranks(0, 2))
    assert shard_batch(batch, None)["x"].shape == (14, 585, 4)
