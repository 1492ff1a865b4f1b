"""A fitted dynamic NeRF, ready to render: the Python API behind ``resfields render``.

>>> scene = load_nerf("runs/nerf", backend="tinygrad")              # doctest: +SKIP
>>> views = scene.render(camera, time=0.25)                         # doctest: +SKIP
>>> views["rgb"].shape, views["depth"].shape, views["normals"].shape  # doctest: +SKIP
((96, 96, 3), (96, 96), (96, 96, 3))

Everything rendering needs (frame count, scene box, sample count, model) lives in the checkpoint,
so a pretrained scene renders without its training data. Time is the library's one convention:
frame ``f`` of ``T`` sits at ``t = -1 + 2 f / (T - 1)``; a time between frames blends the two
neighbouring frames' ResField coefficients (DyNeRF, whose latent codes exist per frame only, needs a
time on a frame, as do Nerfies and HyperNeRF).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from resfields.decode import decode_dataclass
from resfields.errors import CheckpointError, DataError, FrameError, ResFieldsError, ShapeError, SpecError, short_repr
from resfields.spec import ModelSpec, frame_to_time, spec_differences
from resfields.tasks.common.cameras import Camera, orbit_cameras
from resfields.tasks.common.values import is_int

from .model import LATENT_METHODS, NerfModelConfig, nerf_forward, nerf_spec
from .pipeline import OUTPUTS, Predict, Sampler, query_batch, render_view
from .sampling import FRONT, OccupancyGrid, occupancy_from_sdf

__all__ = [
    "FittedNerf",
    "SceneMetadata",
    "StoredCamera",
    "camera_from_dict",
    "camera_to_dict",
    "cameras_from_json",
    "load_nerf",
    "nerf_on_model",
    "resolve_time",
    "scene_from_metadata",
    "stored_scene",
]


def resolve_time(n_frames: int, *, time: float | None = None, frame: int | None = None) -> tuple[float, int]:
    """``(t, nearest frame)`` from exactly one of a normalised ``time`` in [-1, 1] or a ``frame`` id."""
    if (time is None) == (frame is None):
        raise FrameError("give exactly one of time (normalised, in [-1, 1]) or frame (an integer id)")
    if frame is not None:
        if not is_int(frame) or not 0 <= frame < n_frames:
            raise FrameError(f"frame must be an integer in [0, {n_frames}), got {frame!r}")
        return frame_to_time(int(frame), n_frames), int(frame)
    t = float(time)  # type: ignore[arg-type]
    if not (math.isfinite(t) and -1.0 <= t <= 1.0):
        raise FrameError(f"time must be a finite number in [-1, 1] (the normalised time convention), got {time!r}")
    nearest = 0 if n_frames == 1 else round((t + 1.0) / 2.0 * (n_frames - 1))
    return t, int(nearest)


def cameras_from_json(path: str | Path) -> list[Camera]:
    """Cameras from a JSON file: a list of ``{"intrinsics": 3x3, "cam_to_world": 4x4, "height": H,
    "width": W}`` (OpenCV convention, as :class:`~resfields.tasks.common.cameras.Camera`); DataError
    naming the file, the camera and the field for anything else."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read a camera list ({type(err).__name__}: {err})") from err
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: expected a non-empty JSON list of cameras")
    return [camera_from_dict(item, f"{path}: camera[{i}]") for i, item in enumerate(items)]


@dataclass
class FittedNerf:
    """A trained dynamic NeRF on a backend. Build it with :func:`load_nerf`.

    Attributes: ``config`` (the model recipe), ``n_frames``, ``bounds`` (2, 3) scene box,
    ``n_samples`` intervals per ray at the surface and ``n_coarse`` SDF queries per ray to find it
    (:mod:`~resfields.tasks.nerf.sampling`), ``predict(batch) -> dict of arrays`` (the model's forward
    on a NumPy batch, :func:`~resfields.tasks.nerf.model.nerf_forward`), ``chunk`` rays per call,
    ``grid_resolution`` cells per axis of the occupancy grid built (once per time) from the SDF, so
    that rays through empty space cost nothing (0: no grid; views too small to repay building it
    render without), and ``sampler`` ("surface", or
    "stratified": ``n_samples`` equal intervals over the box, the dense reference).
    """

    config: NerfModelConfig
    n_frames: int
    bounds: np.ndarray
    n_samples: int
    predict: Predict
    chunk: int = 1024
    dataset_cameras: dict[str, Camera] | None = None  # the training data's cameras, by name (cam00, ...)
    n_coarse: int = 16
    grid_resolution: int = 48
    sampler: Sampler = "surface"
    weights: Callable[[], dict[str, np.ndarray]] | None = None  # the model's current parameters
    _grids: dict[float, OccupancyGrid] = field(default_factory=dict, repr=False)
    _grids_of: bytes = field(default=b"", repr=False)  # fingerprint of the weights the grids were built from

    def nearest_frame(self, time: float) -> int:
        """The frame closest to normalised ``time``."""
        return resolve_time(self.n_frames, time=time)[1]

    def check_time(self, *, time: float | None = None, frame: int | None = None) -> tuple[float, int]:
        """``(t, nearest frame)`` this scene renders for a ``time`` or a ``frame`` (see :func:`resolve_time`);
        FrameError if it cannot (out of range, or between frames for a method with per-frame codes)."""
        t, nearest = resolve_time(self.n_frames, time=time, frame=frame)
        on_frame = math.isclose(t, frame_to_time(nearest, self.n_frames), abs_tol=1e-6)
        if self.config.method in LATENT_METHODS and not on_frame:
            raise FrameError(
                f"{self.config.method} has one latent code per frame; time {t} is between frames (nearest {nearest})"
            )
        return t, nearest

    def sdf(self, points: np.ndarray, *, time: float | None = None, frame: int | None = None) -> np.ndarray:
        """The signed distance at ``points`` (N, 3) at a normalised ``time`` or a ``frame`` -> (N,)."""
        t, nearest = self.check_time(time=time, frame=frame)
        return self._sdf_at(t, nearest)(np.asarray(points, np.float32).reshape(-1, 3))

    def _evaluate(self, points: np.ndarray, t: float, frame: int) -> tuple[np.ndarray, float]:
        """The SDF at ``points`` (N, 3) -> (N,), in queries of one fixed shape (a compiled backend
        compiles it once), and the density's ``beta`` the model reports with it."""
        chunk, values, beta = 16384, [], float("nan")
        for start in range(0, max(len(points), 1), chunk):
            part = points[start : start + chunk]
            filled = len(part)
            part = np.concatenate([part, np.zeros((chunk - filled, 3), np.float32)])
            out = self.predict(query_batch(part.reshape(1, chunk, 1, 3), np.array([t]), np.array([frame])))
            values.append(np.asarray(out["sdf"]).reshape(-1)[:filled])
            beta = float(np.asarray(out["beta"]).reshape(-1)[0])
        return np.concatenate(values), beta

    def _sdf_at(self, t: float, frame: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda points: self._evaluate(points, t, frame)[0]

    def occupancy(self, *, time: float | None = None, frame: int | None = None) -> OccupancyGrid:
        """The occupancy grid of the scene at a ``time`` or ``frame`` (built on first use, then kept)."""
        t, nearest = self.check_time(time=time, frame=frame)
        if self.weights is not None:  # weights edited in place since (fine-tuning): the grids are stale
            fingerprint = _fingerprint(self.weights())
            if fingerprint != self._grids_of:
                self._grids.clear()
                self._grids_of = fingerprint
        if t not in self._grids:
            _, beta = self._evaluate(np.zeros((1, 3), np.float32), t, nearest)  # the grid queries' own shape
            margin = FRONT * beta  # where the density still has weight
            self._grids[t] = occupancy_from_sdf(
                self._sdf_at(t, nearest), self.bounds, resolution=self.grid_resolution, margin=margin
            )
        return self._grids[t]

    def render(
        self, camera: Camera, *, time: float | None = None, frame: int | None = None, background: float = 1.0
    ) -> dict[str, np.ndarray]:
        """Render ``camera`` at a normalised ``time`` or a ``frame``: ``rgb`` (H, W, 3) on
        ``background``, ``opacity``/``depth`` (H, W), ``normals`` (H, W, 3)."""
        t, nearest = self.check_time(time=time, frame=frame)
        # The grid costs resolution^3 SDF queries once per time; a view too small for skipping to win
        # that back renders without it (a rule on the view's size alone, so a render never depends
        # on what was rendered before).
        cost_per_ray = self.n_coarse + 4 * self.n_samples  # queries + band samples with normals
        use_grid = 0 < self.grid_resolution and camera.height * camera.width * cost_per_ray >= self.grid_resolution**3
        return render_view(
            self.predict,
            camera,
            self.bounds,
            background=background,
            time=t,
            frame=nearest,
            fd_step=self.config.fd_step,
            n_coarse=self.n_coarse,
            n_samples=self.n_samples,
            chunk=self.chunk,
            grid=self.occupancy(time=t) if use_grid else None,
            sampler=self.sampler,
        )

    def orbit(
        self, n_views: int = 24, size: int | tuple[int, int] = 96, elevation: float = 25.0, radius: float = 3.0
    ) -> list[Camera]:
        """``n_views`` cameras circling the scene's up axis (world z, as the embedded scene)."""
        h, w = (size, size) if isinstance(size, int) else size
        return orbit_cameras(n_views, radius, elevation, h, w, fov_y_degrees=36.0, up=(0.0, 0.0, 1.0))

    def render_sequence(
        self,
        cameras: Sequence[Camera],
        *,
        time: float | None = None,
        frame: int | None = None,
        sweep: bool = False,
        background: float = 1.0,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Render each camera, at one ``time``/``frame`` or (``sweep``) at times going from -1 to 1
        across the cameras: ``rgb`` (V, H, W, 3), ``opacity``/``depth`` (V, H, W), ``normals`` (V, H, W, 3).
        ``progress``: a bar on stderr (on a terminal)."""
        n = len(cameras)
        bar = tqdm(total=n, desc="render", unit="view", leave=False, disable=None if progress else True)
        with bar:
            if sweep:
                times = [-1.0 + 2.0 * i / max(n - 1, 1) for i in range(n)]
                if self.config.method in LATENT_METHODS:  # per-frame codes: each view at its nearest frame
                    times = [frame_to_time(self.nearest_frame(t), self.n_frames) for t in times]
                keys = [{"time": t} for t in times]
            else:
                keys = [{"time": time, "frame": frame}] * n
            views = []
            for camera, key in zip(cameras, keys, strict=True):
                views.append(self.render(camera, background=background, **key))
                bar.update()
        return {key: np.stack([v[key] for v in views]) for key in OUTPUTS}

    def mesh(self, frame: int, resolution: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes of the SDF at ``frame`` on a ``resolution``^3 grid over [-1, 1]^3:
        ``vertices`` (V, 3), ``faces`` (F, 3) (empty when the SDF has no zero crossing)."""
        from resfields.tasks.common.geometry import extract_mesh, grid_points

        t, frame = resolve_time(self.n_frames, frame=frame)
        values = self._sdf_at(t, frame)(grid_points(resolution))
        return extract_mesh(values.reshape(resolution, resolution, resolution))

    def export_mesh(self, frame: int, path: str | Path, resolution: int = 128) -> Path:
        """Write :meth:`mesh` of ``frame`` to ``path`` (.ply or .obj); DataError if there is no surface."""
        from resfields.tasks.common.meshio import write_mesh

        vertices, faces = self.mesh(frame, resolution)
        if len(faces) == 0:
            raise DataError(f"frame {frame}: the SDF has no zero crossing in the scene box, so there is no mesh")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_mesh(path, vertices, faces)
        return Path(path)


def load_nerf(folder: str | Path, *, backend: str = "torch", device: str | None = None) -> FittedNerf:
    """A nerf run folder or pretrained checkpoint (``resfields fit nerf``) on ``backend``.

    The scene's frame count, box and sample count come from the checkpoint's metadata, so the
    training data need not be present. The metadata is decoded strictly and checked against the stored
    model (:func:`scene_from_metadata`) before the model is built: any problem is one CheckpointError.
    """
    from resfields.backends import get_backend
    from resfields.tasks.common.fit import load_run

    try:
        run, ckpt = load_run(folder)
    except SpecError as err:  # a bad run config inside a checkpoint is a bad checkpoint
        raise CheckpointError(f"{folder}: invalid run config in config.json ({err})") from err
    if run.task != "nerf":
        raise DataError(f"{folder}: this needs a nerf checkpoint, this one is {run.task!r}")
    scene = stored_scene(run, ckpt, f"{folder}: config.json")  # checked before the model is built
    impl = get_backend(backend)
    return nerf_on_model(run, scene, impl, impl.build(ckpt.spec, ckpt.arrays, device))


def stored_scene(run: Any, ckpt: Any, where: str) -> SceneMetadata:
    """The decoded ``metadata.scene`` of nerf checkpoint ``ckpt`` of ``run``, checked against its model
    (:func:`scene_from_metadata`); CheckpointError naming ``where`` when it is missing or wrong."""
    if "scene" not in ckpt.metadata:
        raise CheckpointError(f"{where} metadata has no scene (n_frames, bounds); refit or re-save it")
    return scene_from_metadata(ckpt.metadata["scene"], where, model=run.model, spec=ckpt.spec)


def nerf_on_model(run: Any, scene: SceneMetadata, impl: Any, model: Any) -> FittedNerf:
    """The :class:`FittedNerf` that renders ``model``, built by backend ``impl`` for nerf ``run`` with
    the decoded ``scene`` (:func:`scene_from_metadata`). It holds the model itself, so weights edited
    later are what it renders (its occupancy grids are rebuilt when they change)."""
    forward = nerf_forward(run.model, impl.concat)
    return FittedNerf(
        config=run.model,
        n_frames=scene.n_frames,
        bounds=np.asarray(scene.bounds, np.float64),
        n_samples=run.data.render_samples,
        predict=lambda batch: impl.infer(model, forward, batch),
        chunk=run.data.eval_chunk,
        dataset_cameras=dict(scene.cameras),
        n_coarse=run.data.render_coarse,
        weights=lambda: impl.to_numpy(model),
    )


def _fingerprint(arrays: dict[str, np.ndarray]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.digest()


def camera_to_dict(camera: Camera) -> dict[str, Any]:
    """A camera as JSON data (the format of :func:`cameras_from_json`)."""
    return {
        "intrinsics": camera.intrinsics.tolist(),
        "cam_to_world": camera.cam_to_world.tolist(),
        "height": camera.height,
        "width": camera.width,
    }


@dataclass(frozen=True)
class StoredCamera:
    """A camera as JSON data (:func:`camera_to_dict`): the fields and their types, for the strict decoder."""

    intrinsics: tuple[tuple[float, ...], ...]
    cam_to_world: tuple[tuple[float, ...], ...]
    height: int
    width: int


def camera_from_dict(item: Any, where: str = "camera", error: type[ResFieldsError] = DataError) -> Camera:
    """Inverse of :func:`camera_to_dict`, strictly: exactly its keys, a 3x3 and a 4x4 list of finite numbers
    forming a valid :class:`~resfields.tasks.common.cameras.Camera`, integer sizes. Anything else raises
    one ``error`` naming ``where`` and the field."""
    try:
        stored = decode_dataclass(StoredCamera, item, where)
        for name, n in (("intrinsics", 3), ("cam_to_world", 4)):
            rows = getattr(stored, name)
            if len(rows) != n or any(len(row) != n for row in rows):
                raise SpecError(f"{where}.{name}: expected {n} rows of {n} numbers, got {short_repr(rows)}")
        return Camera(np.array(stored.intrinsics), np.array(stored.cam_to_world), stored.height, stored.width)
    except SpecError as err:
        raise error(str(err)) from err
    except (ShapeError, DataError) as err:  # what Camera itself refuses: a bad pose, focal length or size
        raise error(f"{where}: {err}") from err


@dataclass(frozen=True)
class SceneMetadata:
    """``metadata.scene`` of a nerf checkpoint, as :meth:`NerfTask.metadata
    <resfields.tasks.nerf.task.NerfTask.metadata>` writes it: ``n_frames`` (>= 1), ``bounds`` the scene box
    ``[[x, y, z] lo, [x, y, z] hi]`` (finite, lo < hi), and optionally ``cameras`` ``{name: camera}``
    (:func:`camera_to_dict`; decoded to :class:`~resfields.tasks.common.cameras.Camera`) and
    ``camera_splits`` ``{name: split}`` of those cameras. Build it with :func:`scene_from_metadata`."""

    n_frames: int
    bounds: tuple[tuple[float, ...], ...]
    cameras: dict[str, Any] = field(default_factory=dict)
    camera_splits: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "metadata.scene"
        if self.n_frames < 1:
            raise SpecError(f"{where}.n_frames: must be a positive integer, got {short_repr(self.n_frames)}")
        if len(self.bounds) != 2 or any(len(row) != 3 for row in self.bounds):
            raise SpecError(
                f"{where}.bounds: expected [[x, y, z], [x, y, z]] (low, high corner), got {short_repr(self.bounds)}"
            )
        lo, hi = self.bounds
        if not all(a < b for a, b in zip(lo, hi, strict=True)):
            raise SpecError(f"{where}.bounds: the low corner {list(lo)} must be below the high one {list(hi)}")
        cameras = _string_keyed(self.cameras, f"{where}.cameras")
        decoded = {name: camera_from_dict(item, f"{where}.cameras.{name}", SpecError) for name, item in cameras.items()}
        object.__setattr__(self, "cameras", decoded)
        for name, split in _string_keyed(self.camera_splits, f"{where}.camera_splits").items():
            if name not in decoded:
                raise SpecError(
                    f"{where}.camera_splits: {short_repr(name)} is not one of the cameras {short_repr(sorted(decoded))}"
                )
            if not isinstance(split, str):
                raise SpecError(
                    f"{where}.camera_splits.{name}: expected a split name (a string), got {short_repr(split)}"
                )


def _string_keyed(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise SpecError(f"{where}: expected an object keyed by name, got {type(value).__name__}")
    return value


def scene_from_metadata(
    scene: Any, where: str, *, model: NerfModelConfig | None = None, spec: ModelSpec | None = None
) -> SceneMetadata:
    """Decode ``metadata.scene`` strictly (:class:`SceneMetadata`; unknown keys, wrong types, missing,
    non-finite or out-of-range values are refused), and, given the run's ``model`` recipe and the stored
    ``spec``, check it against them: ``n_frames`` must be the frame count that the ResField capacity (one
    coefficient per frame unless the recipe fixed a capacity) and the per-frame latent codes were built
    for, and ``spec`` must be what the recipe builds for it. Every problem is one CheckpointError naming
    ``where`` and the field."""
    try:
        decoded = decode_dataclass(SceneMetadata, scene, "metadata.scene")
    except SpecError as err:
        raise CheckpointError(f"{where} {err}") from err
    if model is None or spec is None:
        return decoded
    fields, arrays = dict(getattr(spec, "fields", ())), dict(getattr(spec, "arrays", ()))
    implied = []  # (what fixes the frame count, that count)
    resfield = getattr(fields.get("sdf"), "resfield", None)
    if model.resfield_layers and model.capacity is None and resfield is not None:
        implied.append(("its ResField capacity, one coefficient per frame", resfield.capacity))
    if model.method in LATENT_METHODS and "latents" in arrays:
        implied.append(("its latent codes, one per frame", arrays["latents"].shape[0]))
    for what, count in implied:
        if decoded.n_frames != count:
            raise CheckpointError(
                f"{where} metadata.scene.n_frames is {short_repr(decoded.n_frames)}, but the stored model was "
                f"built for {count} frames ({what})"
            )
    expected = nerf_spec(model, decoded.n_frames)
    if expected != spec:
        raise CheckpointError(
            f"{where}: the stored model does not match the one its run config describes "
            f"({spec_differences(spec, expected)})"
        )
    return decoded
