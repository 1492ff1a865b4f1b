"""`resfields fit nerf`, `eval` and `render` end to end on a tiny generated scene."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import TINY_NERF

from resfields.cli import main
from resfields.errors import FrameError
from resfields.tasks.common.fit import load_run
from resfields.tasks.common.meshio import read_mesh
from resfields.tasks.nerf.fitted import load_nerf
from resfields.tasks.nerf.task import export_mesh


@pytest.fixture
def run_folder(tiny_nerf_run):
    return tiny_nerf_run


def test_fit_writes_a_nerf_run(run_folder):
    run, ckpt = load_run(run_folder)
    assert run.task == "nerf" and run.model.method == "tnerf" and set(ckpt.spec.field("sdf").resfield_layers) == {1}
    assert {"sdf.layers.1.coefficients", "color.layers.0.weight", "beta"} <= set(ckpt.arrays)
    metrics = json.loads((run_folder / "metrics.json").read_text())["metrics"]
    # an untrained SDF may have no surface yet: its Chamfer is then null (infinite), but it is reported
    assert set(metrics) == {"psnr", "masked_psnr", "ssim", "chamfer_l1", "render_ms_per_view"} and metrics["psnr"] > 3
    assert (run_folder / "media" / "test_views.gif").is_file()


def test_eval_and_render(run_folder, tmp_path):
    scene = load_run(run_folder)[0].data.source  # eval reads only data named on its command line
    assert main(["eval", str(run_folder), "--data", scene, "--out", str(tmp_path / "eval")]) == 0
    assert (
        main(
            [
                "render",
                str(run_folder),
                "--views",
                "3",
                "--size",
                "12",
                "--time-sweep",
                "--out",
                str(tmp_path / "o.gif"),
            ]
        )
        == 0
    )
    frames = iio.imread(tmp_path / "o.gif")
    assert frames.shape[1:3] == (12, 12)
    with pytest.raises(FrameError, match="frame must be an integer in"):
        export_mesh(run_folder, 9, tmp_path / "m.ply", resolution=16)


def test_mesh_export_of_a_frame(run_folder, tmp_path):
    # one step from the geometric init of the default-size SDF network: still roughly its sphere around
    # the origin (radius ~0.3-0.5 with this encoding), at every time (the time input starts at zero weight)
    scene = load_run(run_folder)[0].data.source
    out = tmp_path / "run"
    argv = ["fit", "nerf", "--data", scene, "--steps", "1", "--resfield-layers", "1", "--rank", "2"]
    assert main([*argv, "--n-samples", "8", "--batch-size", "32", "--mesh-resolution", "0", "--out", str(out)]) == 0
    vertices, faces = read_mesh(export_mesh(out, 1, tmp_path / "m.ply", resolution=24))
    radii = np.linalg.norm(vertices, axis=1)
    assert len(faces) > 100 and 0.2 < np.median(radii) < 0.6 and np.linalg.norm(vertices.mean(0)) < 0.1
    with pytest.raises(FrameError, match="frame must be"):
        load_nerf(run_folder).render(load_nerf(run_folder).orbit(1, 8)[0], frame=5)


def test_render_api_at_any_time_from_the_checkpoint_alone(run_folder, tmp_path):
    scene = load_nerf(run_folder)
    assert (
        scene.n_frames == 2
        and scene.bounds.shape == (2, 3)
        and set(scene.dataset_cameras) == {"cam00", "cam01", "cam02"}
    )
    camera = scene.orbit(1, (10, 14))[0]
    views = scene.render(camera, time=0.0)  # between the two frames
    assert (
        views["rgb"].shape == (10, 14, 3) and views["depth"].shape == (10, 14) and views["normals"].shape == (10, 14, 3)
    )
    ends = [scene.render(camera, frame=f)["rgb"] for f in (0, 1)]
    assert np.array_equal(scene.render(camera, time=-1.0)["rgb"], ends[0])  # a frame's time is that frame
    # ResField coefficients blend linearly between frames; the rendered middle lies near the two ends' mean
    assert np.abs(views["rgb"] - (ends[0] + ends[1]) / 2).mean() < np.abs(ends[0] - ends[1]).mean() + 1e-3
    for bad in (1.5, float("nan")):
        with pytest.raises(FrameError, match="normalised"):
            scene.render(camera, time=bad)
    with pytest.raises(FrameError, match="exactly one"):
        scene.render(camera, time=0.0, frame=0)


def test_render_cli_cameras_outputs_and_errors(run_folder, tmp_path, capsys):
    out = tmp_path / "pngs"
    argv = ["render", str(run_folder), "--camera", "dataset:cam01", "--time", "0.5", "--outputs", "rgb,depth,normals"]
    assert main([*argv, "--out", str(out)]) == 0
    image = iio.imread(out / "view_000.png")
    assert image.shape == (16, 48, 3) and (out / "depth.npy").is_file()
    text = capsys.readouterr().out
    assert text.startswith("rendered 1 view(s) of 16x16 (rgb, depth, normals)") and "wrote " in text
    assert main([*argv, "--out", str(tmp_path / "one.png"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is the JSON document alone
    assert summary["views"] == 1 and summary["written"] == [str(tmp_path / "one.png")] and summary["ms_per_view"] > 0
    cameras = tmp_path / "cams.json"
    from resfields.tasks.nerf.fitted import camera_to_dict

    cameras.write_text(json.dumps([camera_to_dict(c) for c in load_nerf(run_folder).orbit(2, 9)]))
    assert main(["render", str(run_folder), "--camera", f"path:{cameras}", "--out", str(tmp_path / "p.gif")]) == 0
    assert iio.imread(tmp_path / "p.gif").shape[:3] == (2, 9, 9)
    assert main(["render", str(run_folder), "--camera", "dataset:cam09", "--out", str(tmp_path / "x.gif")]) == 2
    assert "cam00" in capsys.readouterr().err
    assert main(["render", str(run_folder), "--time", "3", "--out", str(tmp_path / "x.gif")]) == 2


def test_dynerf_renders_frames_only(tmp_path, run_folder):
    scene_dir = load_run(run_folder)[0].data.source
    out = tmp_path / "dynerf"
    argv = ["fit", "nerf", "--data", scene_dir, "--steps", "1", "--method", "dynerf", "--out", str(out), "--quiet"]
    assert main([*argv, *TINY_NERF, "--mesh-resolution", "0", "--no-media"]) == 0
    scene = load_nerf(out)
    camera = scene.orbit(1, 8)[0]
    assert scene.render(camera, time=1.0)["rgb"].shape == (8, 8, 3)
    with pytest.raises(FrameError, match="latent code per frame"):
        scene.render(camera, time=0.0)


@pytest.mark.slow
def test_tinygrad_renders_the_same_images(run_folder):
    """The same checkpoint rendered by torch and by tinygrad: PSNR between them >= 60 dB."""
    scenes = [load_nerf(run_folder, backend=b) for b in ("torch", "tinygrad")]
    cameras = scenes[0].orbit(2, 12)
    a, b = (s.render_sequence(cameras, time=0.3)["rgb"] for s in scenes)
    mse = float(np.mean((a - b) ** 2))
    assert mse == 0 or 10 * np.log10(1 / mse) >= 60


def test_numpy_reference_renders_what_torch_renders(run_folder):
    """The float64 reference runs the same forward: its images and torch's are >= 60 dB apart."""
    scenes = [load_nerf(run_folder, backend=b) for b in ("torch", "numpy")]
    camera = scenes[0].orbit(1, 12)[0]
    a, b = (s.render(camera, time=0.3) for s in scenes)
    mse = float(np.mean((a["rgb"] - b["rgb"]) ** 2))
    assert mse == 0 or 10 * np.log10(1 / mse) >= 60
    np.testing.assert_allclose(a["depth"], b["depth"], atol=1e-4)
