"""`python -m resfields.benchmarks.nerf_table` end to end on a tiny generated scene: rows, seeds, JSON, reuse."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

import resfields.benchmarks.nerf_table as nerf_table
from resfields.benchmarks.nerf_table import DEFAULT_SEEDS, finished_summary, main, parse_seeds, recorded_run
from resfields.tasks.common.fit import load_run, run_from_dict
from resfields.tasks.nerf.scene import make_scene

TINY = ["nerf.model.width=16", "nerf.model.n_layers=3", "nerf.model.resfield_layers=1", "nerf.model.rank=2"]
TINY += ["nerf.model.feature_dim=4", "nerf.model.color_width=16", "nerf.train.batch_size=16"]
TINY += ["nerf.data.n_coarse=8", "nerf.data.n_samples=4", "nerf.data.mesh_resolution=0", "nerf.data.eval_chunk=256"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these fits are tiny, and on a busy machine more threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_parse_seeds():
    methods = ["tnerf", "dynerf"]
    assert parse_seeds(None, methods) == {"tnerf": DEFAULT_SEEDS["tnerf"], "dynerf": DEFAULT_SEEDS["*"]}
    assert parse_seeds(["tnerf=3,4"], methods) == {"tnerf": (3, 4), "dynerf": (0,)}
    assert parse_seeds(["1,2", "dynerf=5"], methods) == {"tnerf": (1, 2), "dynerf": (5,)}
    with pytest.raises(SystemExit):
        parse_seeds(["dnerf=0"], methods)


def test_table_over_two_seeds_and_reuse(tmp_path, capsys, monkeypatch):
    scene = make_scene(tmp_path / "scene", n_frames=2, size=16, n_train_cameras=2, n_test_cameras=1, supersampling=1)
    out, table = tmp_path / "runs", tmp_path / "table.json"
    argv = ["--methods", "tnerf", "--seeds", "tnerf=0,1", "--steps", "2", "--out", str(out), "--json", str(table)]
    argv += ["--render-size", "16", "--no-progress", "--set", f"nerf.data.source={scene}"]
    for item in TINY:
        argv += ["--set", item]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("    python -m resfields.benchmarks.nerf_table --methods tnerf")
    assert "| vanilla | 0,1 |" in text and "| ResFields (layers 1, rank 2) | 0,1 |" in text
    assert "±" in text and "ResFields − vanilla (2 paired seeds): novel-view PSNR" in text
    runs = json.loads(table.read_text())["runs"]
    order = [("vanilla", 0), ("resfields", 0), ("vanilla", 1), ("resfields", 1)]  # paired rows first
    assert [(r["variant"], r["seed"]) for r in runs] == order
    assert not any(r["reused"] for r in runs) and all(r["render"]["median_ms"] > 0 for r in runs)
    metrics = sorted(out.glob("tnerf/*/seed*/metrics.json"))
    assert len(metrics) == 4
    mtimes = [p.stat().st_mtime_ns for p in metrics]
    first = tmp_path / "first.json"
    shutil.copy(table, first)  # the next call rewrites the table

    assert main([*argv, "--resume-existing", "--render-size", "0"]) == 0  # the timed renders were tested above
    assert [p.stat().st_mtime_ns for p in metrics] == mtimes  # nothing retrained
    again = json.loads(table.read_text())["runs"]
    assert all(r["reused"] and r["render"] is None for r in again)
    assert [r["summary"]["metrics"] for r in again] == [r["summary"]["metrics"] for r in runs]
    assert "±" in capsys.readouterr().out

    # a run asked for with other steps, another seed or other options is not the stored one: it would be retrained
    folder = metrics[0].parent
    stored = load_run(folder)[0]
    assert finished_summary(folder, stored) is not None
    assert finished_summary(folder, replace(stored, train=replace(stored.train, steps=3))) is None
    assert finished_summary(folder, replace(stored, train=replace(stored.train, seed=7))) is None
    assert finished_summary(folder, replace(stored, model=replace(stored.model, rank=3))) is None

    # the JSON's runs stand in for the folders once these are gone (an earlier session's table)
    for p in metrics:
        shutil.rmtree(p.parent)

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(nerf_table, "fit", no_training)
    grown = tmp_path / "grown.json"
    assert main([*argv, "--records", str(first), "--json", str(grown)]) == 0
    recorded = json.loads(grown.read_text())["runs"]
    assert all(r["recorded"] == str(first) and r["reused"] for r in recorded)
    assert [r["summary"]["metrics"] for r in recorded] == [r["summary"]["metrics"] for r in runs]
    assert [r["render"] for r in recorded] == [r["render"] for r in runs]  # same size: the recorded timing
    assert "±" in capsys.readouterr().out
    assert main([*argv, "--records", str(first), "--json", str(grown), "--render-size", "8"]) == 0
    assert all(r["render"] is None for r in json.loads(grown.read_text())["runs"])  # no timing at another size
    capsys.readouterr()

    # another step count, seed or option is not the recorded run
    run = run_from_dict(runs[0]["run"])
    assert recorded_run(runs, run) is runs[0]
    assert recorded_run(runs, replace(run, train=replace(run.train, steps=3))) is None
    assert recorded_run(runs, replace(run, train=replace(run.train, seed=7))) is None
    assert recorded_run(runs, replace(run, model=replace(run.model, rank=3))) is None
    assert recorded_run([{"summary": runs[0]["summary"]}], run) is None  # a record without its run config
    with pytest.raises(AssertionError, match="trained again"):
        main([*argv, "--records", str(first), "--steps", "3"])
    with pytest.raises(SystemExit, match="not a table JSON"):
        main([*argv, "--records", str(tmp_path / "missing.json")])
