"""The one rendering pipeline of the dynamic NeRF: rays -> surface samples -> model -> pixels.

Training (:class:`~resfields.tasks.nerf.rays.RaySampler`), :class:`~resfields.tasks.nerf.fitted.FittedNerf`,
the zoo's cross-backend check and the tests all go through these functions, on every backend: the
backend only runs ``predict(batch)``, the model's forward pass on a NumPy batch
(:func:`~resfields.tasks.nerf.model.nerf_forward`); everything else here is NumPy. Two kinds of batch:

* a **query** batch (:func:`query_batch`): ``points`` (F, P, N, 3), ``time``, ``frame`` ->
  ``{"sdf": (F, P, N, 1), "beta": (1,)}``, the SDF alone without gradients;
* a **ray** batch (:func:`ray_batch`): intervals along rays -> ``rgb``, ``opacity``, ``depth``,
  ``normals`` per ray (:func:`~resfields.tasks.nerf.model.render_batch`), differentiable in training.

:func:`surface_intervals` turns rays into a ray batch's intervals with one query pass
(:mod:`resfields.tasks.nerf.sampling`); :func:`render_rays` renders any rays with it and
:func:`render_view` a whole camera, skipping rays that meet no occupied cell of an
:class:`~resfields.tasks.nerf.sampling.OccupancyGrid`. ``sampler="stratified"`` instead spreads
``n_samples`` intervals over the whole box segment: the dense many-sample render the fast one is
checked against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from resfields.errors import DataError
from resfields.tasks.common.cameras import Camera
from resfields.tasks.common.values import is_int

from .model import difference_offsets
from .render import ray_box_intersection, rays_from_camera, sample_points, stratified_samples
from .sampling import OccupancyGrid, negligible_rays, occupied_points, surface_band

__all__ = [
    "OUTPUTS",
    "Predict",
    "coarse_sdf",
    "query_batch",
    "ray_batch",
    "render_rays",
    "render_view",
    "surface_intervals",
]

Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
Sampler = Literal["surface", "stratified"]
OUTPUTS = ("rgb", "opacity", "depth", "normals")
MIN_DEPTH_OPACITY = 0.01  # a view's depth is NaN (background) where less of the ray than this is blocked


def _frame_inputs(times: np.ndarray, frames: np.ndarray) -> dict[str, np.ndarray]:
    f = len(times)
    return {
        "time": np.asarray(times, np.float32).reshape(f, 1, 1, 1),
        "frame": np.asarray(frames, np.int64).reshape(f, 1, 1),
    }


def query_batch(points: np.ndarray, times: np.ndarray, frames: np.ndarray) -> dict[str, np.ndarray]:
    """An SDF query: ``points`` (F, P, N, 3) at frame ``frames`` (F,) of normalised ``times`` (F,)."""
    return {"points": np.asarray(points, np.float32), **_frame_inputs(times, frames)}


def ray_batch(
    origins: np.ndarray,
    directions: np.ndarray,
    t_starts: np.ndarray,
    t_ends: np.ndarray,
    times: np.ndarray,
    frames: np.ndarray,
    fd_step: float,
) -> dict[str, np.ndarray]:
    """The model's input for rendering intervals: ``origins``/``directions`` (F, P, 3) (unit directions),
    ``t_starts``/``t_ends`` (F, P, S), ``times``/``frames`` (F,) -> ``points``/``dirs`` (F, P, S, 3) at the
    interval midpoints, the intervals, ``time`` (F, 1, 1, 1), ``frame`` (F, 1, 1) and the
    forward-difference ``offsets`` (see :func:`~resfields.tasks.nerf.model.render_batch`)."""
    starts, ends = np.asarray(t_starts, np.float32), np.asarray(t_ends, np.float32)
    f, p, s = starts.shape
    points = sample_points(
        origins.reshape(-1, 3), directions.reshape(-1, 3), starts.reshape(-1, s), ends.reshape(-1, s)
    )
    return {
        "points": points.reshape(f, p, s, 3),
        "dirs": np.broadcast_to(np.asarray(directions, np.float32)[:, :, None, :], (f, p, s, 3)).copy(),
        "t_starts": starts,
        "t_ends": ends,
        **_frame_inputs(times, frames),
        "offsets": difference_offsets(fd_step),
    }


def coarse_sdf(
    query: Predict,
    origins: np.ndarray,
    directions: np.ndarray,
    near: np.ndarray,
    far: np.ndarray,
    times: np.ndarray,
    frames: np.ndarray,
    *,
    n_coarse: int,
    rng: np.random.Generator | None = None,
    coarse: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The sampler's query pass (arguments as :func:`surface_intervals`): ``t`` (F * P, n_coarse) the
    coarse distances, ``sdf`` (F * P, n_coarse) the SDF there (float64) and the model's ``beta``."""
    f, p = near.shape
    o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    if coarse is None:
        starts, ends = stratified_samples(near.reshape(-1), far.reshape(-1), n_coarse, rng)
        t = 0.5 * (starts.astype(np.float64) + ends)
    else:
        t = np.asarray(coarse, np.float64).reshape(f * p, n_coarse)
    points = o[:, None, :] + d[:, None, :] * t[..., None]
    out = query(query_batch(points.reshape(f, p, n_coarse, 3), times, frames))
    sdf = np.asarray(out["sdf"], np.float64).reshape(f * p, n_coarse)
    return t, sdf, float(np.asarray(out["beta"]).reshape(-1)[0])


def surface_intervals(
    query: Predict,
    origins: np.ndarray,
    directions: np.ndarray,
    near: np.ndarray,
    far: np.ndarray,
    times: np.ndarray,
    frames: np.ndarray,
    *,
    n_coarse: int,
    n_samples: int,
    rng: np.random.Generator | None = None,
    coarse: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Intervals at the surface for rays of F frames (:mod:`~resfields.tasks.nerf.sampling`).

    Args:
        query: ``predict`` of the model; called once with a (F, P, n_coarse, 3) query batch.
        origins, directions: (F, P, 3) rays; ``near``, ``far`` (F, P) their segments in the scene box.
        times, frames: (F,) normalised time and id of each frame.
        n_coarse: SDF queries per ray; ``n_samples``: intervals per ray returned.
        rng: jitters the coarse points and the intervals (training); None: deterministic.
        coarse: (F, P, n_coarse) distances of the coarse points, when already chosen (e.g. by
            :func:`~resfields.tasks.nerf.sampling.occupied_points`); None: stratified over [near, far].

    Returns:
        ``t_starts``, ``t_ends`` (F, P, n_samples) float32.
    """
    f, p = near.shape
    t, sdf, beta = coarse_sdf(
        query, origins, directions, near, far, times, frames, n_coarse=n_coarse, rng=rng, coarse=coarse
    )
    t_starts, t_ends = surface_band(t, sdf, near.reshape(-1), far.reshape(-1), beta=beta, n_samples=n_samples, rng=rng)
    return t_starts.reshape(f, p, n_samples), t_ends.reshape(f, p, n_samples)


def _padded(rays: np.ndarray, size: int) -> np.ndarray:
    """(R, ...) -> (size, ...) by repeating the last row: real rays whose results are cropped away."""
    if len(rays) == size:
        return rays
    return np.concatenate([rays, np.repeat(rays[-1:], size - len(rays), axis=0)])


def render_rays(
    predict: Predict,
    origins: np.ndarray,
    directions: np.ndarray,
    bounds: np.ndarray,
    *,
    time: float,
    frame: int,
    fd_step: float,
    n_coarse: int,
    n_samples: int,
    chunk: int,
    grid: OccupancyGrid | None = None,
    sampler: Sampler = "surface",
) -> dict[str, np.ndarray]:
    """Render R rays of one frame, ``chunk`` rays per model call (the last call padded: fixed shapes).

    Args:
        predict: the model's forward on a NumPy batch (query and ray batches).
        origins, directions: (R, 3) rays, unit directions; ``bounds`` (2, 3) the scene box.
        time, frame: the normalised time and the frame id (ResField lookup, per-frame codes).
        fd_step: the model's forward-difference step (normals).
        n_coarse, n_samples: the sampler's query and interval counts per ray.
        grid: this frame's occupancy: rays that meet no occupied cell are not evaluated (opacity 0),
            and the surface sampler's queries cover only occupied cells.
        sampler: "surface" (the sampler of training) or "stratified" (n_samples equal intervals over
            the box segment, no query: the dense reference).

    Returns:
        NumPy ``rgb`` (R, 3) (not composited: add ``(1 - opacity) * background``), ``opacity`` (R, 1),
        ``depth`` (R, 1) (distance along the unit ray), ``normals`` (R, 3) (opacity-weighted).
    """
    if sampler not in ("surface", "stratified"):
        raise DataError(f"sampler must be 'surface' or 'stratified'; got {sampler!r}")
    if not is_int(chunk) or chunk < 1:
        raise DataError(f"chunk must be a positive integer; got {chunk!r}")
    o, d = np.asarray(origins, np.float32), np.asarray(directions, np.float32)
    near, far, hit = ray_box_intersection(o, d, bounds)
    coarse = None
    if grid is not None:
        coarse = np.zeros((len(o), n_coarse))
        for start in range(0, len(o), chunk):  # the march holds (chunk, steps) arrays, not (R, steps)
            part = slice(start, start + chunk)
            coarse[part], first, last = occupied_points(grid, o[part], d[part], near[part], far[part], n_coarse)
            hit[part] &= last > first
    todo = np.flatnonzero(hit)
    result = {
        "rgb": np.zeros((len(o), 3), np.float32),
        "opacity": np.zeros((len(o), 1), np.float32),
        "depth": np.zeros((len(o), 1), np.float32),
        "normals": np.zeros((len(o), 3), np.float32),
    }
    times, frames = np.array([time]), np.array([frame])
    bands = np.zeros((len(o), 2, n_samples), np.float32)
    if sampler == "surface":
        # pass 1, queries: the band of every ray, and the rays that provably carry no weight
        # (negligible_rays: the coarse points here are deterministic and evenly spaced)
        for start in range(0, len(todo), chunk):
            rows = todo[start : start + chunk]
            po, pd, pn, pf = (_padded(a[rows], chunk) for a in (o, d, near, far))
            ct = None if coarse is None else _padded(coarse[rows], chunk)[None]
            t, sdf, beta = coarse_sdf(
                predict, po[None], pd[None], pn[None], pf[None], times, frames, n_coarse=n_coarse, coarse=ct
            )
            t0, t1 = surface_band(t, sdf, pn, pf, beta=beta, n_samples=n_samples)
            bands[rows, 0], bands[rows, 1] = t0[: len(rows)], t1[: len(rows)]
            hit[rows[negligible_rays(t[: len(rows)], sdf[: len(rows)], beta=beta)]] = False
        todo = np.flatnonzero(hit)
    else:
        bands[:, 0], bands[:, 1] = stratified_samples(near, far, n_samples)
    # pass 2, the band: normals and colour for the rays that carry weight, in full chunks
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        filled = len(rows)
        co, cd = _padded(o[rows], chunk)[None], _padded(d[rows], chunk)[None]
        t0, t1 = (_padded(bands[rows, k], chunk)[None] for k in (0, 1))
        out = predict(ray_batch(co, cd, t0, t1, times, frames, fd_step))
        for key in OUTPUTS:
            result[key][rows] = np.asarray(out[key], np.float32)[0, :filled]
    return result


def render_view(
    predict: Predict,
    camera: Camera,
    bounds: np.ndarray,
    *,
    background: float = 1.0,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Render one camera (options: those of :func:`render_rays`): ``rgb`` (H, W, 3) composited on
    ``background`` and clipped to [0, 1], ``opacity`` (H, W), ``depth`` (H, W) the expected distance
    of the surface along the unit ray, given that the ray meets it (the accumulated distance divided
    by the opacity), NaN on the background (opacity below :data:`MIN_DEPTH_OPACITY`), and
    ``normals`` (H, W, 3) (opacity-weighted)."""
    origins, directions = rays_from_camera(camera)
    out = render_rays(predict, origins, directions, bounds, **options)
    h, w = camera.height, camera.width
    opacity = out["opacity"]
    seen = opacity >= MIN_DEPTH_OPACITY
    depth = np.divide(out["depth"], opacity, out=np.full_like(opacity, np.nan), where=seen)
    return {
        "rgb": np.clip(out["rgb"] + (1.0 - opacity) * background, 0, 1).reshape(h, w, 3),
        "opacity": opacity.reshape(h, w),
        "depth": depth.reshape(h, w),
        "normals": out["normals"].reshape(h, w, 3),
    }
