"""The task layer: run configs, the shared fitting loop on both backends, resume, eval, the CLI.

Every fit here is tiny (a few frames, a few hundred steps at most) so the file stays in the default
suite; the results table in the README comes from `resfields.benchmarks.tasks`, not from tests.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import moving_pattern_clip

from resfields.cli import main
from resfields.errors import CheckpointError, SpecError
from resfields.spec import frame_to_time
from resfields.tasks import get_task
from resfields.tasks.common.config import ModelConfig, RunConfig, TrainConfig, config_to_dict, field_keys
from resfields.tasks.common.fit import evaluate_run, fit, load_run, run_from_dict
from resfields.tasks.common.meshio import write_anime
from resfields.tasks.common.sequence import MeshSequence

pytest.importorskip("tinygrad")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> str:
    """4 frames of a moving colour pattern, 12x16, as .npy."""
    path = tmp_path_factory.mktemp("video") / "clip.npy"
    np.save(path, moving_pattern_clip(4, 12, 16))
    return str(path)


def _subdivide(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every triangle into four at its edge midpoints (shared midpoints stay shared)."""
    verts, index, faces = list(v), {}, []
    for tri in f:
        mids = []
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            key = (min(a, b), max(a, b))
            if key not in index:
                index[key] = len(verts)
                verts.append((verts[a] + verts[b]) / 2)
            mids.append(index[key])
        ab, bc, ca = mids
        faces += [[tri[0], ab, ca], [ab, tri[1], bc], [ca, bc, tri[2]], [ab, bc, ca]]
    return np.array(verts), np.array(faces)


def _octahedron_sphere(levels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A closed sphere mesh: an octahedron subdivided ``levels`` times and projected to radius 1."""
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    for _ in range(levels):
        v, f = _subdivide(v, f)
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


@pytest.fixture(scope="module")
def anime_file(tmp_path_factory) -> str:
    """A sphere squashing into an ellipsoid over 5 frames, as a DeformingThings4D .anime file."""
    v, f = _octahedron_sphere(3)
    frames = [v * np.array([1 + 0.15 * k, 1 - 0.1 * k, 1]) * 0.5 for k in range(5)]
    path = tmp_path_factory.mktemp("anime") / "squash.anime"
    write_anime(path, MeshSequence(tuple(frames), tuple(f for _ in frames), name="squash"))
    return str(path)


def _video_run(source: str, steps: int = 60, **model) -> RunConfig:
    task = get_task("video")
    return RunConfig(
        "video",
        task.Data(source=source, n_frames=None, scale=1.0),
        # omega0 = 10 suits a 12x16 clip; the default 30 is for full-resolution video
        ModelConfig(**{"width": 32, "rank": 2, "omega0": 10.0, **model}),
        TrainConfig(steps=steps, batch_size=512, lr=3e-3),
    )


def _falls(losses: list[float]) -> bool:
    return float(np.mean(losses[-5:])) < 0.5 * float(np.mean(losses[:5]))


# ----------------------------------------------------------------------------- configs


def test_run_config_round_trip_and_strictness(video_file):
    run = _video_run(video_file)
    assert run_from_dict(json.loads(json.dumps(config_to_dict(run)))) == run
    data = config_to_dict(run)
    with pytest.raises(SpecError, match="unknown key"):
        run_from_dict({**data, "model": {**data["model"], "widht": 3}})
    with pytest.raises(SpecError, match="expected an integer"):
        run_from_dict({**data, "train": {**data["train"], "steps": 2.5}})
    with pytest.raises(SpecError, match="one of"):
        run_from_dict({**data, "model": {**data["model"], "mode": "nearest"}})
    with pytest.raises(SpecError, match="unknown task"):
        run_from_dict({**data, "task": "audio"})


def test_cosine_schedule_ends_at_lr_final():
    train = TrainConfig(steps=101, lr_final=0.1)
    assert train.lr_factor(0) == pytest.approx(1.0)
    assert train.lr_factor(50) == pytest.approx(0.55)
    assert train.lr_factor(100) == pytest.approx(0.1)


def test_field_keys_follow_the_time_convention():
    ids = np.array([0, 2, 4])
    assert set(field_keys(ModelConfig(), ids, 5)) == {"frame_ids"}
    times = field_keys(ModelConfig(mode="interpolation"), ids, 5)["times"]
    np.testing.assert_allclose(times, [frame_to_time(i, 5) for i in ids])
    assert field_keys(ModelConfig(resfield_layers=()), ids, 5) == {}


# ----------------------------------------------------------------------------- fitting


@pytest.fixture(scope="module")
def video_runs(video_file, tmp_path_factory):
    """The same tiny video run on torch and on tinygrad (same init, same batches)."""
    run = _video_run(video_file)
    out = {}
    for backend in ("torch", "tinygrad"):
        folder = tmp_path_factory.mktemp(f"video_{backend}")
        summary = fit(run, folder, backend=backend, progress=False, media=backend == "torch")
        out[backend] = (folder, summary)
    return out


@pytest.mark.parametrize("backend", ["torch", "tinygrad"])
def test_video_fit_loss_falls_and_writes_a_run_folder(video_runs, backend):
    folder, summary = video_runs[backend]
    history = json.loads((folder / "training_state.json").read_text())["history"]["loss"]
    assert _falls(history), history[:5] + history[-5:]
    for name in ("config.json", "model.safetensors", "metrics.json", "training_curve.png"):
        assert (folder / name).is_file(), name
    assert set(summary["metrics"]) >= {"test_psnr", "train_psnr", "ssim"}
    # predicting the clip's mean colour scores 12.6 dB
    assert summary["metrics"]["train_psnr"] > 18.0
    if backend == "torch":
        for name in ("reconstruction.mp4", "reconstruction.gif"):
            assert (folder / "media" / name).stat().st_size > 1000


def test_backends_train_the_same_video_model(video_runs):
    (_, torch_summary), (_, tiny_summary) = video_runs["torch"], video_runs["tinygrad"]
    for key in ("test_psnr", "train_psnr", "ssim"):
        assert tiny_summary["metrics"][key] == pytest.approx(torch_summary["metrics"][key], abs=0.05)


@pytest.mark.parametrize("backend", ["tinygrad", "numpy"])
def test_eval_on_another_backend_matches(video_runs, backend):
    folder, summary = video_runs["torch"]
    again = evaluate_run(folder, backend=backend)
    for key in ("test_psnr", "train_psnr", "ssim"):
        assert again["metrics"][key] == pytest.approx(summary["metrics"][key], abs=1e-3)


def test_resume_continues_exactly(video_file, tmp_path):
    run = _video_run(video_file, steps=20)
    whole = tmp_path / "whole"
    fit(run, whole, progress=False, media=False)
    part = tmp_path / "part"
    fit(run, part, stop_at=10, progress=False, media=False)
    assert load_run(part)[1].metadata["step"] == 10
    fit(run, part, resume=True, progress=False, media=False)
    losses = [json.loads((d / "training_state.json").read_text())["history"]["loss"] for d in (whole, part)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    with pytest.raises(SpecError, match="cannot resume"):
        fit(_video_run(video_file, steps=30, rank=3), part, resume=True, progress=False, media=False)


def test_resume_needs_a_run_folder(video_file, tmp_path):
    with pytest.raises(CheckpointError):
        fit(_video_run(video_file), tmp_path / "missing", resume=True, progress=False)


@pytest.mark.slow  # ~20 s, the suite budget (torch vs tinygrad fits: the video runs above; .anime input: flow)
def test_sdf_fit_on_an_anime_file(anime_file, tmp_path):
    task = get_task("sdf")
    run = RunConfig(
        "sdf",
        task.Data(source=anime_file, n_frames=None, points_per_frame=3000, resolution=20, eval_samples=2000),
        ModelConfig(width=32, rank=2, omega0=10.0),
        TrainConfig(steps=60, batch_size=1024, lr=1e-3),
    )
    summaries = {}
    for backend in ("torch", "tinygrad"):
        folder = tmp_path / backend
        summaries[backend] = fit(run, folder, backend=backend, progress=False, media=backend == "torch")
        history = json.loads((folder / "training_state.json").read_text())["history"]["loss"]
        assert _falls(history), (backend, history[:5] + history[-5:])
    torch_metrics, tiny_metrics = summaries["torch"]["metrics"], summaries["tinygrad"]["metrics"]
    assert np.isfinite(torch_metrics["chamfer_l1"])
    assert tiny_metrics["chamfer_l1"] == pytest.approx(torch_metrics["chamfer_l1"], rel=0.05)
    assert len(list((tmp_path / "torch" / "media" / "meshes").glob("*.ply"))) == 5
    assert (tmp_path / "torch" / "media" / "time_sweep.gif").is_file()


def test_flow_fit_and_tinygrad_eval(anime_file, tmp_path):
    task = get_task("flow")
    model, _ = task.defaults()
    run = RunConfig(
        "flow",
        task.Data(source=anime_file, n_frames=None, points_per_frame=1000, test_points_per_frame=300, holdout_every=2),
        replace(model, width=32, rank=2, capacity=3, omega0=10.0),
        TrainConfig(steps=60, batch_size=1024, lr=1e-3),
    )
    summary = fit(run, tmp_path, progress=False)
    history = json.loads((tmp_path / "training_state.json").read_text())["history"]["loss"]
    assert _falls(history), history[:5] + history[-5:]
    metrics = summary["metrics"]
    assert {"test_points_epe", "test_frames_epe", "test_points_acc_strict"} <= set(metrics)
    assert (tmp_path / "media" / "flow.gif").is_file()
    tiny = evaluate_run(tmp_path, backend="tinygrad")["metrics"]
    assert tiny["test_frames_epe"] == pytest.approx(metrics["test_frames_epe"], rel=1e-3)


# ----------------------------------------------------------------------------- CLI


def test_cli_fit_then_eval(video_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "video", "--data", video_file, "--n-frames", "3", "--scale", "1.0", "--width", "16"]
    argv += ["--rank", "2", "--steps", "5", "--batch-size", "256", "--out", str(out), "--quiet", "--no-media"]
    assert main(argv) == 0
    run, ckpt = load_run(out)
    assert run.data.n_frames == 3 and ckpt.spec.resfield.capacity == 3
    # eval reads only data named on its command line, never a path stored in the checkpoint
    data = ["--data", video_file]
    assert main(["eval", str(out), *data, "--backend", "numpy", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["backend"] == "numpy"
    assert main(["eval", str(out), *data, "--set", "holdout_fraction=0.5", "--out", str(tmp_path / "half")]) == 0
    assert main(["eval", str(out), "--set", "resolution=3"]) == 2  # one line on stderr, no traceback
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["fit", "video", "--data", video_file, "--steps", "7", "--out", str(out), "--resume", "--quiet"]) == 0
    assert load_run(out)[1].metadata["step"] == 7


def test_cli_rejects_bad_options(video_file, tmp_path):
    with pytest.raises(SystemExit):
        main(["fit", "video", "--steps", "many"])
    with pytest.raises(SystemExit):
        main(["fit", "video", "--mode", "nearest"])
    assert main(["fit", "video", "--data", video_file, "--steps", "-3", "--out", str(tmp_path), "--quiet"]) == 2


def test_frame_major_layout():
    from resfields.tasks.common.batches import frame_major, samples_per_frame

    assert samples_per_frame(10, 3) == 3 and samples_per_frame(2, 5) == 1
    batch = {"x": np.arange(12.0).reshape(6, 2), "frame_ids": np.array([0, 0, 0, 4, 4, 4])}
    out = frame_major(batch, 2)
    assert out["x"].shape == (2, 3, 2) and out["frame_ids"].tolist() == [[0], [4]]
    with pytest.raises(ValueError, match="not constant"):
        frame_major({"frame_ids": np.array([0, 1, 1, 1])}, 2)


def test_equal_parameter_width_matches_the_resfield_count():
    from resfields.benchmarks.tasks import _n_params, equal_parameter_width

    model = ModelConfig(width=64, rank=4)
    width = equal_parameter_width(model, 3, 3, 10)
    vanilla = replace(model, resfield_layers=())
    assert _n_params(replace(vanilla, width=width), 3, 3, 10) >= _n_params(model, 3, 3, 10)
    assert _n_params(replace(vanilla, width=width - 8), 3, 3, 10) < _n_params(model, 3, 3, 10)


@pytest.mark.parametrize("task_name", ["sdf", "flow"])
def test_embedded_bunny_fits(task_name, tmp_path):
    """The default data (the deforming bunny from pymeshfix's scan) through the CLI, tiny sizes."""
    argv = ["fit", task_name, "--n-frames", "5", "--points-per-frame", "2000", "--width", "16", "--rank", "2"]
    argv += ["--steps", "5", "--batch-size", "500", "--out", str(tmp_path), "--quiet", "--no-media"]
    if task_name == "sdf":
        argv += ["--resolution", "16", "--eval-samples", "1000"]
    else:
        argv += ["--test-points-per-frame", "200", "--holdout-every", "2"]
    assert main(argv) == 0
    run, ckpt = load_run(tmp_path)
    assert run.data.source is None and ckpt.metadata["step"] == 5
    # five steps give no surface yet: an empty mesh's infinite Chamfer is stored as null (strict JSON)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert set(metrics) >= ({"chamfer_l1"} if task_name == "sdf" else {"test_frames_epe"})
