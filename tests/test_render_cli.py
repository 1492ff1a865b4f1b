"""`resfields render` and the CLI around it: scene metadata decoded strictly against the model, atomic media
writes, output forms checked before rendering, resource limits, and one-line errors instead of tracebacks."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

from resfields.checkpoint import save_checkpoint
from resfields.cli import main
from resfields.errors import CheckpointError
from resfields.init import sample_parameters
from resfields.tasks.common import media
from resfields.tasks.common.cameras import orbit_cameras
from resfields.tasks.common.config import RunConfig, TrainConfig, config_to_dict
from resfields.tasks.nerf.fitted import FittedNerf, camera_to_dict, load_nerf
from resfields.tasks.nerf.model import NerfModelConfig, nerf_spec
from resfields.tasks.nerf.task import NerfOptions

BUNNY = Path(__file__).resolve().parents[1] / "zoo" / "checkpoints" / "nerf-bunny"


class _Delete:
    def __repr__(self) -> str:  # a readable, stable test id
        return "DELETE"


DELETE = _Delete()  # a config edit that removes the key


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's stderr, which must be exactly one ``resfields: error: ...`` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resfields: error: "), lines
    return lines[0]


class Raw(str):
    """JSON text to splice in as is (e.g. ``1e400``, which Python would write as the invalid ``Infinity``)."""


def edit_config(folder: Path, *path: str, value: Any) -> Path:
    """Set (or, with DELETE, remove) ``config.json``'s entry at ``path`` in place; returns the folder."""
    config = json.loads((folder / "config.json").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = "@RAW@" if isinstance(value, Raw) else value
    text = json.dumps(config)
    (folder / "config.json").write_text(text.replace('"@RAW@"', value) if isinstance(value, Raw) else text)
    return folder


@pytest.fixture
def bunny(tmp_path: Path) -> Path:
    """A run-folder copy of the zoo's pretrained NeRF (16 frames, ResField capacity 16), free to edit."""
    folder = tmp_path / "bunny"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(BUNNY / name, folder / name)
    return folder


def tiny_checkpoint(
    folder: Path,
    *,
    method: str = "tnerf",
    n_frames: int = 3,
    resfield_layers: tuple[int, ...] = (1,),
    capacity: int | None = None,
) -> Path:
    """An untrained, very small nerf checkpoint written the way `resfields fit nerf` writes one."""
    model = NerfModelConfig(
        method=method,  # type: ignore[arg-type]
        width=8,
        n_layers=3,
        n_frequencies=2,
        resfield_layers=resfield_layers,
        rank=2,
        capacity=capacity,
        feature_dim=4,
        color_width=8,
        latent_dim=4,
    )
    run = RunConfig("nerf", NerfOptions(n_samples=4, eval_chunk=64, mesh_resolution=0), model, TrainConfig(steps=1))
    spec = nerf_spec(model, n_frames)
    cameras = orbit_cameras(2, 3.0, 20.0, 8, 8, up=(0.0, 0.0, 1.0))
    scene = {
        "n_frames": n_frames,
        "bounds": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]],
        "cameras": {f"cam{i:02d}": camera_to_dict(c) for i, c in enumerate(cameras)},
        "camera_splits": {"cam00": "train", "cam01": "test"},
    }
    metadata = {"task": "nerf", "run": config_to_dict(run), "step": 1, "backend": "torch", "scene": scene}
    return save_checkpoint(folder, spec, sample_parameters(spec, seed=0), metadata=metadata)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "tiny")


@pytest.fixture
def no_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argument errors must come before any work: building orbits, rendering or meshing fails the test."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("render did work before it checked its arguments")

    for name in ("render", "render_sequence", "orbit", "mesh"):
        monkeypatch.setattr(FittedNerf, name, forbidden)


# ----------------------------------------------------------------------------- scene metadata vs the model


def test_n_frames_must_match_the_resfield_capacity(bunny, tmp_path, capsys):
    edit_config(bunny, "metadata", "scene", "n_frames", value=10**9)
    with pytest.raises(CheckpointError, match=r"metadata\.scene\.n_frames is 1000000000.* 16 frames.*capacity"):
        load_nerf(bunny)
    argv = ["render", str(bunny), "--frame", "7", "--views", "1", "--size", "16", "--out", str(tmp_path / "x.gif")]
    assert main(argv) == 2
    line = error_line(capsys)
    assert "n_frames" in line and "1000000000" in line and "16 frames" in line
    assert not (tmp_path / "x.gif").exists()


def test_n_frames_must_match_the_latent_codes(tmp_path):
    folder = tiny_checkpoint(tmp_path / "dynerf", method="dynerf", resfield_layers=(), n_frames=3)
    assert load_nerf(folder).n_frames == 3
    edit_config(folder, "metadata", "scene", "n_frames", value=4)
    with pytest.raises(CheckpointError, match=r"n_frames.*latent"):
        load_nerf(folder)


def test_a_fixed_capacity_leaves_the_frame_count_to_the_scene(tmp_path):
    # capacity 2 over 3 frames: interpolation mode blends coefficients, so the model does not fix T
    assert load_nerf(tiny_checkpoint(tmp_path / "fixed", n_frames=3, capacity=2)).n_frames == 3


def test_the_run_config_must_describe_the_stored_model(tiny):
    edit_config(tiny, "metadata", "run", "model", "feature_dim", value=6)
    with pytest.raises(CheckpointError, match="run config"):
        load_nerf(tiny)


CAMERA = ("metadata", "scene", "cameras", "cam00")
MALFORMED = [  # (path under config.json, bad value, the field the message must name)
    (("metadata", "scene", "n_frames"), "3", "n_frames"),
    (("metadata", "scene", "n_frames"), 3.5, "n_frames"),
    (("metadata", "scene", "n_frames"), None, "n_frames"),
    (("metadata", "scene", "n_frames"), True, "n_frames"),
    (("metadata", "scene", "n_frames"), 0, "n_frames"),
    (("metadata", "scene", "n_frames"), -3, "n_frames"),
    (("metadata", "scene", "n_frames"), [3], "n_frames"),
    (("metadata", "scene", "n_frames"), DELETE, "n_frames"),
    (("metadata", "scene", "bounds"), "box", "bounds"),
    (("metadata", "scene", "bounds"), 5, "bounds"),
    (("metadata", "scene", "bounds"), [[-1, -1, -1]], "bounds"),
    (("metadata", "scene", "bounds"), [[-1, -1, -1], [1, 1, 1], [2, 2, 2]], "bounds"),
    (("metadata", "scene", "bounds"), [[-1, -1], [1, 1]], "bounds"),
    (("metadata", "scene", "bounds"), [[-1, -1, -1], [1, 1]], "bounds"),
    (("metadata", "scene", "bounds"), [[1, 1, 1], [-1, -1, -1]], "bounds"),
    (("metadata", "scene", "bounds"), [[-1, -1, -1], [1, 1, "1"]], "bounds"),
    (("metadata", "scene", "bounds"), Raw("[[-1, -1, -1], [1, 1, 1e400]]"), "bounds"),  # JSON 1e400 reads as inf
    (("metadata", "scene", "bounds"), DELETE, "bounds"),
    (("metadata", "scene", "cameras"), [], "cameras"),
    (("metadata", "scene", "cameras"), "cam00", "cameras"),
    (("metadata", "scene", "cameras", "cam00"), "front", "cam00"),
    ((*CAMERA, "height"), DELETE, "height"),
    ((*CAMERA, "height"), -8, "height"),
    ((*CAMERA, "height"), "8", "height"),
    ((*CAMERA, "width"), 0, "width"),
    ((*CAMERA, "width"), 8.0, "width"),
    ((*CAMERA, "intrinsics"), "K", "intrinsics"),
    ((*CAMERA, "intrinsics"), [[1, 0], [0, 1]], "intrinsics"),
    ((*CAMERA, "intrinsics"), [[10, 0, 4], [0, 10, 4], [0, 0]], "intrinsics"),
    ((*CAMERA, "intrinsics"), [[-10, 0, 4], [0, 10, 4], [0, 0, 1]], "cam00: Camera focal lengths"),
    ((*CAMERA, "cam_to_world"), [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 3], [0, 0, 0, 1]], "cam_to_world"),
    ((*CAMERA, "cam_to_world"), DELETE, "cam_to_world"),
    ((*CAMERA, "focal"), 10.0, "focal"),
    (("metadata", "scene", "camera_splits"), [], "camera_splits"),
    (("metadata", "scene", "camera_splits"), {"cam00": 1}, "camera_splits"),
    (("metadata", "scene", "camera_splits"), {"cam07": "train"}, "cam07"),
    (("metadata", "scene", "margin"), 0.1, "margin"),
    (("metadata", "scene"), [], "scene"),
    (("metadata", "scene"), DELETE, "scene"),
]


@pytest.mark.parametrize(("path", "value", "field"), MALFORMED, ids=lambda x: repr(x)[:40])
def test_malformed_scene_metadata_is_one_checkpoint_error(tiny, path, value, field, tmp_path, capsys):
    edit_config(tiny, *path, value=value)
    with pytest.raises(CheckpointError, match=field):
        load_nerf(tiny)
    assert main(["render", str(tiny), "--views", "1", "--size", "8", "--out", str(tmp_path / "x.gif")]) == 2
    assert field in error_line(capsys)


def test_non_finite_bounds_from_python_are_refused():
    from resfields.tasks.nerf.fitted import scene_from_metadata

    scene = {"n_frames": 2, "bounds": [[-1.0, float("nan"), -1.0], [1.0, 1.0, 1.0]]}
    with pytest.raises(CheckpointError, match="bounds"):
        scene_from_metadata(scene, "a checkpoint")


# ----------------------------------------------------------------------------- atomic media writes


def _previous(folder: Path, name: str) -> tuple[Path, bytes]:
    """A finished file from an earlier run, and its bytes."""
    path = folder / name
    if name.endswith(".npy"):
        np.save(path, np.ones(3))
    elif name.endswith(".png"):
        media.write_image(path, np.full((6, 6, 3), 0.25))
    else:
        media.write_video(path, np.full((2, 6, 6, 3), 0.25), fps=4)
    return path, path.read_bytes()


def _writers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoders that write a few bytes to the file they are given, then hit a full disk."""
    import imageio.v3 as imageio_v3
    from matplotlib.figure import Figure

    def partial(target: Any) -> None:  # into whatever the encoder is given: a file, a buffer or "<bytes>"
        if hasattr(target, "write"):
            target.write(b"half a file")
        elif str(target) != "<bytes>":
            Path(target).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def ffmpeg(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        Path(command[-1]).write_bytes(b"half a file")  # ffmpeg reports a full disk in its exit status only
        stderr = b"[out#0/mp4] Could not write header: No space left on device\n"
        return subprocess.CompletedProcess(command, 1, b"", stderr)

    monkeypatch.setattr(imageio_v3, "imwrite", lambda target, *a, **k: partial(target))
    monkeypatch.setattr(media.subprocess, "run", ffmpeg)
    monkeypatch.setattr(Figure, "savefig", lambda self, target, **k: partial(target))
    monkeypatch.setattr(np, "save", lambda target, *a, **k: partial(target))


WRITES = {
    "clip.gif": lambda path: media.write_video(path, np.zeros((3, 8, 8, 3)), fps=4),
    "clip.mp4": lambda path: media.write_video(path, np.zeros((3, 8, 8, 3)), fps=4),
    "view.png": lambda path: media.write_image(path, np.zeros((8, 8, 3))),
    "curve.png": lambda path: media.plot_curves(path, {"loss": ([0, 1], [1.0, 0.5])}, ylabel="loss"),
    "depth.npy": lambda path: media.write_array(path, np.zeros((2, 8, 8), np.float32)),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_failed_media_write_keeps_the_previous_file(name, tmp_path, monkeypatch):
    path, before = _previous(tmp_path, name)
    _writers(monkeypatch)
    with pytest.raises(OSError) as caught:
        WRITES[name](path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)  # names the user's file
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary litter


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_failed_first_write_leaves_no_file(name, tmp_path, monkeypatch):
    _writers(monkeypatch)
    with pytest.raises(OSError):
        WRITES[name](tmp_path / name)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", sorted(WRITES))
def test_media_writes_replace_the_file_with_ordinary_permissions(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(b"old")
    assert WRITES[name](path) == path
    assert path.read_bytes() != b"old" and sorted(os.listdir(tmp_path)) == [name]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() would create it, not tempfile's 0600


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (needs root and mount); skips visibly where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot simulate a full disk")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate a full disk: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)  # never leave a mount behind


def _fill(folder: Path) -> None:
    """Take every free byte of the disk at ``folder``."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_render_on_a_full_disk_is_one_line_and_keeps_the_previous_video(full_disk, tiny, capsys):
    previous, before = _previous(full_disk, "orbit.gif")
    _fill(full_disk)
    argv = ["render", str(tiny), "--time", "0", "--views", "2", "--size", "16", "--out", str(previous)]
    assert main(argv) == 2
    line = error_line(capsys)
    assert str(previous) in line and "No space left" in line
    assert previous.read_bytes() == before and sorted(os.listdir(full_disk)) == ["filler", "orbit.gif"]


@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_media_write_on_a_full_disk_keeps_the_previous_file(name, full_disk):
    previous, before = _previous(full_disk, name)
    _fill(full_disk)
    with pytest.raises(OSError) as caught:
        WRITES[name](previous)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(previous)
    assert previous.read_bytes() == before and sorted(os.listdir(full_disk)) == sorted([name, "filler"])


# ----------------------------------------------------------------------------- output forms, checked first


@pytest.mark.parametrize("name", ["x.avi", "x.txt", "x.jpg", "renders.v2"])
def test_unknown_output_forms_are_refused_before_rendering(name, bunny, tmp_path, capsys, no_render):
    assert main(["render", str(bunny), "--views", "1", "--size", "16", "--out", str(tmp_path / name)]) == 2
    line = error_line(capsys)
    assert all(form in line for form in (".mp4", ".gif", ".png", "folder")), line
    assert not (tmp_path / name).exists()


def test_png_takes_exactly_one_view(bunny, tmp_path, capsys, no_render):
    out = tmp_path / "x.png"
    assert main(["render", str(bunny), "--views", "2", "--size", "16", "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "one" in line and "folder" in line and ".gif" in line
    assert not out.exists()


def test_png_of_one_view_is_one_image_and_a_folder_is_asked_for(tiny, tmp_path):
    out = tmp_path / "x.png"
    assert main(["render", str(tiny), "--time", "0", "--views", "1", "--size", "16", "--out", str(out)]) == 0
    assert out.is_file() and iio.imread(out).shape == (16, 16, 3)
    folder = tmp_path / "views.v1"  # a suffix, but the trailing slash asks for a folder
    argv = ["render", str(tiny), "--camera", "dataset:cam01", "--frame", "2", "--out", f"{folder}{os.sep}"]
    assert main(argv) == 0
    assert sorted(os.listdir(folder)) == ["depth.npy", "view_000.png"]
    assert iio.imread(folder / "view_000.png").shape == (8, 8, 3) and np.load(folder / "depth.npy").shape == (1, 8, 8)


def test_render_help_documents_the_output_forms_and_limits(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("FILE.png", "ending in /", "no extension", "--max-side", "--max-pixels", "--max-views"):
        assert words in text, words


def test_out_under_a_regular_file_is_refused_before_rendering(bunny, tmp_path, capsys, no_render):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out in (blocker / "x.gif", blocker / "deeper" / "x.png", f"{blocker / 'views'}{os.sep}"):
        assert main(["render", str(bunny), "--views", "1", "--size", "16", "--out", str(out)]) == 2
        assert str(blocker) in error_line(capsys)
    assert blocker.read_text() == "not a folder"


def test_a_video_path_that_is_a_folder_is_refused(bunny, tmp_path, capsys, no_render):
    (tmp_path / "x.gif").mkdir()
    assert main(["render", str(bunny), "--views", "1", "--size", "16", "--out", str(tmp_path / "x.gif")]) == 2
    assert "folder" in error_line(capsys)


def test_mesh_path_is_checked_before_meshing(bunny, tmp_path, capsys, no_render):
    argv = ["render", str(bunny), "--frame", "1", "--mesh", str(tmp_path / "m.stl"), "--out", str(tmp_path / "x.gif")]
    assert main(argv) == 2
    assert ".ply" in error_line(capsys)


# ----------------------------------------------------------------------------- resource limits


LIMITS = [
    (["--size", "60000"], "--max-side"),
    (["--size", "16", "60000"], "--max-side"),
    (["--size", "0"], "--size"),
    (["--size", "-16"], "--size"),
    (["--size", "16", "-1"], "--size"),
    (["--size", "1", "2", "3"], "--size"),
    (["--views", "0"], "--views"),
    (["--views", "-2"], "--views"),
    (["--views", "1000000000"], "--max-views"),
    (["--views", "3000", "--size", "4096"], "--max-pixels"),
    (["--fps", "0"], "--fps"),
    (["--elevation", "nan"], "--elevation"),
]


@pytest.mark.parametrize(("options", "named"), LIMITS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_render_sizes_are_limited_before_any_work(options, named, bunny, tmp_path, capsys, no_render):
    assert main(["render", str(bunny), *options, "--out", str(tmp_path / "x.gif")]) == 2
    assert named in error_line(capsys)


def test_the_limits_can_be_lifted(bunny, tmp_path, capsys, no_render):
    # with --max-side raised the size passes its check and the (forbidden) orbit is reached
    with pytest.raises(AssertionError, match="before it checked"):
        main(["render", str(bunny), "--size", "5000", "--views", "1", "--max-side", "5000", "--out", "x.gif"])


def test_a_camera_file_is_held_to_the_same_limits(bunny, tmp_path, capsys, no_render):
    camera = load_nerf(bunny).dataset_cameras["cam00"].resized(5000, 5000)  # type: ignore[index]
    cameras = tmp_path / "cams.json"
    cameras.write_text(json.dumps([camera_to_dict(camera)]))
    argv = ["render", str(bunny), "--camera", f"path:{cameras}", "--out", str(tmp_path / "x.gif")]
    assert main(argv) == 2
    assert "--max-side" in error_line(capsys)


# ----------------------------------------------------------------------------- one line, not a traceback


@pytest.mark.parametrize("outputs", [",", "", "rgb,colour", "depth,,nope"])
def test_bad_outputs_are_one_line_before_rendering(outputs, bunny, tmp_path, capsys, no_render):
    argv = ["render", str(bunny), "--views", "1", "--outputs", outputs, "--out", str(tmp_path / "x.gif")]
    assert main(argv) == 2
    assert "--outputs" in error_line(capsys)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_available(), reason="this machine has a CUDA GPU, so --device cuda is valid here")
@pytest.mark.parametrize(
    "argv",
    [
        ["render", "{run}", "--device", "cuda", "--views", "1", "--size", "16", "--out", "{tmp}/x.gif"],
        ["render", "{run}", "--device", "cuda:0", "--backend", "tinygrad", "--views", "1", "--out", "{tmp}/x.gif"],
        ["render", "{run}", "--device", "gpu", "--views", "1", "--size", "16", "--out", "{tmp}/x.gif"],
        ["eval", "{run}", "--device", "cuda"],
        ["fit", "video", "--device", "cuda", "--steps", "1", "--quiet", "--no-media", "--out", "{tmp}/run"],
        ["conformance", "--backend", "torch", "--device", "cuda"],
        ["conformance", "--checkpoint", "{run}", "--device", "cuda"],
    ],
    ids=lambda argv: " ".join(argv[:4]),
)
def test_a_missing_device_is_one_line(argv, bunny, tmp_path, capsys, no_render):
    argv = [a.format(run=bunny, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    line = error_line(capsys)
    assert "--device" in line and "cpu" in line
    assert not (tmp_path / "run").exists()


def test_a_run_task_that_is_not_a_string_is_one_line(bunny, tmp_path, capsys):
    edit_config(bunny, "metadata", "run", "task", value=["nerf"])
    assert main(["render", str(bunny), "--views", "1", "--size", "16", "--out", str(tmp_path / "x.gif")]) == 2
    assert "task" in error_line(capsys)
    assert main(["eval", str(bunny)]) == 2
    assert "task" in error_line(capsys)


def test_os_errors_on_user_paths_are_one_line(monkeypatch, capsys):
    import resfields.tasks.nerf.views as views

    def denied(args: Any) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/renders/orbit.gif")

    monkeypatch.setattr(views, "render_command", denied)
    assert main(["render", "somewhere", "--out", "/srv/renders/orbit.gif"]) == 2
    assert error_line(capsys) == "resfields: error: /srv/renders/orbit.gif: Permission denied"
