"""Where to sample an SDF scene along each ray (host side, NumPy): at the surface, never in empty space.

The dynamic NeRF has one sampler, used by training, rendering and the tests alike
(:mod:`resfields.tasks.nerf.pipeline` runs it):

1. **Coarse**: ``n_coarse`` points per ray over its segment inside the scene box, or, when an
   :class:`OccupancyGrid` is given (rendering), spread over the occupied part of the ray only
   (:func:`occupied_points`). The SDF is queried there without gradients: one SDF evaluation per point,
   no normals, no colour.
2. **Surface band** (:func:`surface_band`): the first outside-to-inside zero crossing of the coarse SDF,
   interpolated linearly, locates the surface; ``n_samples`` intervals tile a band around it exactly as
   wide as VolSDF's Laplace density of scale ``beta`` needs along that ray: ``front * beta / slope``
   before, ``back * beta / slope`` behind, where ``slope`` is how fast the SDF falls along the ray (a
   grazing ray gets a wider band). Only these intervals reach the network with gradients, normals
   and colour. A ray without a crossing gets its band where it passes closest to the surface (the
   coarse points within ``front * beta`` of its smallest SDF, one coarse spacing more either side):
   there a grazing ray's weight lies, a missing surface must grow (mask loss) or a spurious one vanish.
3. **Rendering only**: a ray whose coarse SDF stays clear of zero by more than its spacing can hide
   (:func:`negligible_rays`, a Lipschitz bound) provably draws less than ``1e-4`` opacity and gets no
   band at all; at 256x256 that is about a fifth of the rays the grid lets through.

Why this and not NeuS's merged coarse + importance samples, or nerfacc's ray marching: all three put
samples at the surface, but the band has a fixed count per ray (TinyJit, ``torch.compile``), needs
only one cheap query pass, and every one of its samples carries weight, so the expensive pass (four
SDF evaluations for the normal, plus colour) is spent where the image is made. Its width follows the
learnt ``beta``: wide at the start (``beta`` = 0.1, the band covers much of the ray, like stratified
sampling), a few millimetres once the surface is sharp, so the quadrature resolves any ``beta``. The
mass the band leaves out is bounded: with ``front = 5`` the optical depth before it is
``0.5 exp(-5) / slope`` (under 0.4 % of the ray's weight for a head-on ray).

Everything here is a pure function of its inputs: training stays reproducible from ``(seed, step)``
and a resumed run samples exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.values import is_int

from .render import stratified_samples

__all__ = [
    "BACK",
    "FRONT",
    "OccupancyGrid",
    "first_crossing",
    "negligible_rays",
    "occupancy_from_sdf",
    "occupied_points",
    "sample_from_weights",
    "surface_band",
]

FRONT = 5.0  # band before the surface, in units of beta / slope
BACK = 7.0  # band behind it: the Laplace density saturates inside, so the weight ends within a few beta
MIN_SLOPE = 0.1  # grazing rays: the band widens up to 1 / MIN_SLOPE times, no further


def _rows(name: str, value: np.ndarray, n_rays: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n_rays:
        raise ShapeError(f"{name} must have shape ({n_rays}, N); got {arr.shape}")
    return arr


def first_crossing(t: np.ndarray, sdf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first outside-to-inside zero crossing of the SDF along each ray.

    Args:
        t: (R, N) increasing distances of the coarse points along each ray.
        sdf: (R, N) signed distances there (negative inside).

    Returns:
        ``t_surface`` (R,), ``slope`` (R,) = how fast the SDF falls along the ray there (> 0), and
        ``found`` (R,) bool. Between the last positive and the first non-positive point the SDF is
        taken as linear. A ray that starts inside (first point non-positive) crosses at its first
        point. Rays without a crossing get ``found = False``, ``t_surface`` at their point of smallest
        SDF and ``slope = 1``.
    """
    t = np.asarray(t, dtype=np.float64)
    s = _rows("sdf", sdf, len(t))
    if t.shape != s.shape or t.ndim != 2 or t.shape[1] < 1:
        raise ShapeError(f"t and sdf must both have shape (R, N) with N >= 1; got {t.shape} and {s.shape}")
    rays = np.arange(len(t))
    crossing = (s[:, :-1] > 0) & (s[:, 1:] <= 0)
    inside_at_start = s[:, 0] <= 0
    has = crossing.any(axis=1)
    i = np.argmax(crossing, axis=1)  # first crossing (0 where there is none; masked below)
    j = np.minimum(i + 1, t.shape[1] - 1)
    s0, s1, t0, t1 = s[rays, i], s[rays, j], t[rays, i], t[rays, j]
    drop = np.where(has, s0 - s1, 1.0)
    span = np.where(has, t1 - t0, 1.0)
    t_surface = np.where(has, t0 + span * np.divide(s0, drop, out=np.zeros_like(s0), where=drop > 0), 0.0)
    slope = np.where(has & (span > 0), drop / np.where(span > 0, span, 1.0), 1.0)
    nearest = t[rays, np.argmin(s, axis=1)]
    t_surface = np.where(inside_at_start, t[:, 0], np.where(has, t_surface, nearest))
    slope = np.where(inside_at_start, 1.0, slope)
    return t_surface, slope, has | inside_at_start


def surface_band(
    t: np.ndarray,
    sdf: np.ndarray,
    near: np.ndarray,
    far: np.ndarray,
    *,
    beta: float,
    n_samples: int,
    rng: np.random.Generator | None = None,
    front: float = FRONT,
    back: float = BACK,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_samples`` intervals per ray that tile the band around its surface (module docstring, step 2).

    Args:
        t: (R, N) coarse points along each ray (increasing), ``sdf`` (R, N) the SDF there.
        near: (R,) and ``far`` (R,): the ray's segment in the scene box; the band never leaves it
            (``near == far``, a ray that misses the box, gives zero-length intervals: zero weight).
        beta: the Laplace scale of the density being rendered (> 0).
        n_samples: S intervals per ray.
        rng: jitters the interior interval edges (training); None gives equal intervals.

    Returns:
        ``t_starts`` (R, S), ``t_ends`` (R, S) float32 that tile ``[band start, band end]``.
    """
    if not (isinstance(beta, int | float | np.floating) and np.isfinite(beta) and beta > 0):
        raise DataError(f"beta must be a positive finite number; got {beta!r}")
    t = np.asarray(t, dtype=np.float64)
    near64, far64 = np.asarray(near, np.float64), np.asarray(far, np.float64)
    if near64.shape != (len(t),) or far64.shape != near64.shape:
        raise ShapeError(f"near and far must have shape ({len(t)},); got {near64.shape} and {far64.shape}")
    s = _rows("sdf", sdf, len(t))
    t_surface, slope, found = first_crossing(t, s)
    scale = beta / np.clip(slope, MIN_SLOPE, 1.0)
    start, end = t_surface - front * scale, t_surface + back * scale
    # No crossing (a ray passing close by): the band spans the coarse points within front * beta of
    # the ray's smallest SDF, one coarse spacing more either side, where a grazing ray's weight lies.
    spacing = np.max(np.diff(t, axis=1), axis=1, initial=0.0)
    close = s <= s.min(axis=1, keepdims=True) + front * beta
    first, last = np.argmax(close, axis=1), t.shape[1] - 1 - np.argmax(close[:, ::-1], axis=1)
    rows = np.arange(len(t))
    start = np.where(found, start, t[rows, first] - spacing)
    end = np.where(found, end, t[rows, last] + spacing)
    start, end = np.clip(start, near64, far64), np.clip(end, near64, far64)
    return stratified_samples(start, np.maximum(end, start), n_samples, rng)


def negligible_rays(
    t: np.ndarray, sdf: np.ndarray, *, beta: float, lipschitz: float = 1.5, tolerance: float = 1e-4
) -> np.ndarray:
    """Rays whose opacity is provably below ``tolerance``: they need no band, no normals, no colour.

    Between coarse points ``gap`` apart an SDF with gradient at most ``lipschitz`` stays above
    ``b = min(sdf) - lipschitz * gap / 2``; where ``b > 0`` the Laplace density is at most
    ``exp(-b / beta) / (2 beta)``, so the optical depth over the ``N * gap`` the points cover is at
    most ``N gap exp(-b / beta) / (2 beta)`` and the opacity below that. ``gap`` is the ray's smallest
    positive spacing: the spacing of deterministic coarse points (rendering, where
    :func:`occupied_points` spaces them evenly over the occupied cells, whose complement the grid
    already counts as empty).

    Args:
        t: (R, N) coarse distances along each ray (increasing, deterministic), ``sdf`` (R, N) there.
        beta: the density's Laplace scale (> 0).

    Returns:
        (R,) bool.
    """
    if not (isinstance(beta, int | float | np.floating) and np.isfinite(beta) and beta > 0):
        raise DataError(f"beta must be a positive finite number; got {beta!r}")
    t = np.asarray(t, dtype=np.float64)
    s = _rows("sdf", sdf, len(t))
    if t.shape != s.shape or t.shape[1] < 1:
        raise ShapeError(f"t and sdf must share one (R, N) shape; got {t.shape} and {s.shape}")
    diffs = np.diff(t, axis=1)
    gap = np.min(np.where(diffs > 0, diffs, np.inf), axis=1, initial=np.inf)
    spaced = np.isfinite(gap)  # a ray of one point (or all at one place) bounds nothing
    gap = np.where(spaced, gap, 0.0)
    bound = s.min(axis=1) - lipschitz * gap / 2
    depth = t.shape[1] * gap * np.exp(-np.maximum(bound, 0.0) / beta) / (2 * beta)
    return spaced & (bound > 0) & (depth < tolerance)


def sample_from_weights(
    t_starts: np.ndarray, t_ends: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``n`` points per ray drawn by inverse transform from piecewise-constant weights over intervals.

    Args:
        t_starts: (R, K), ``t_ends`` (R, K) the intervals (increasing, non-overlapping; gaps allowed).
        weights: (R, K) non-negative; a row of zeros spreads its points over all its intervals evenly
            by length.
        n: points per ray.
        rng: None: the quantiles ``(k + 0.5) / n`` (deterministic); a generator: one stratified draw
            per quantile bin.

    Returns:
        (R, n) increasing distances, each inside an interval of positive weight.
    """
    starts, ends = np.asarray(t_starts, np.float64), np.asarray(t_ends, np.float64)
    w = np.asarray(weights, np.float64) * (ends > starts)
    if starts.ndim != 2 or ends.shape != starts.shape or w.shape != starts.shape:
        raise ShapeError(f"t_starts, t_ends and weights must share one (R, K) shape; got {starts.shape}, {w.shape}")
    if np.any(w < 0) or not np.isfinite(w).all():
        raise DataError("weights must be finite and non-negative")
    empty = w.sum(axis=1) <= 0
    w = np.where(empty[:, None], ends - starts, w)
    total = w.sum(axis=1, keepdims=True)
    cdf = np.cumsum(w, axis=1) / np.where(total > 0, total, 1.0)
    u = (np.arange(n) + (0.5 if rng is None else rng.random((len(w), n)))) / n
    u = np.broadcast_to(u, (len(w), n))
    k = np.minimum((cdf[:, None, :] <= u[:, :, None]).sum(-1), w.shape[1] - 1)  # interval of each quantile
    rows = np.arange(len(w))[:, None]
    below = np.where(k > 0, cdf[rows, k - 1], 0.0)
    inside = np.divide(u - below, cdf[rows, k] - below, out=np.full(u.shape, 0.5), where=cdf[rows, k] > below)
    return starts[rows, k] + np.clip(inside, 0.0, 1.0) * (ends[rows, k] - starts[rows, k])


@dataclass(frozen=True)
class OccupancyGrid:
    """Which cells of a regular grid over ``bounds`` (2, 3) may hold surface: ``occupied`` (X, Y, Z) bool.

    Built from an SDF by :func:`occupancy_from_sdf`; rendering skips the rest of space
    (:func:`occupied_points`)."""

    bounds: np.ndarray
    occupied: np.ndarray

    def __post_init__(self) -> None:
        b = np.asarray(self.bounds, np.float64)
        if b.shape != (2, 3) or not np.isfinite(b).all() or np.any(b[0] >= b[1]):
            raise DataError(f"grid bounds must be a finite (2, 3) [lo, hi] with lo < hi; got {b.tolist()}")
        occ = np.asarray(self.occupied)
        if occ.ndim != 3 or occ.dtype != np.bool_ or min(occ.shape) < 1:
            raise ShapeError(f"occupied must be a 3-d boolean array; got {occ.dtype} {occ.shape}")
        object.__setattr__(self, "bounds", b)

    @property
    def cell_size(self) -> np.ndarray:
        """(3,) edge lengths of one cell."""
        return (self.bounds[1] - self.bounds[0]) / np.array(self.occupied.shape)

    def centres(self) -> np.ndarray:
        """(X * Y * Z, 3) cell centres, row-major over (x, y, z)."""
        axes = [self.bounds[0, k] + (np.arange(n) + 0.5) * self.cell_size[k] for k, n in enumerate(self.occupied.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)

    def lookup(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points -> (...) bool: inside the box and in an occupied cell."""
        p = np.asarray(points, np.float64)
        shape = np.array(self.occupied.shape)
        index = np.floor((p - self.bounds[0]) / self.cell_size).astype(np.int64)
        inside = np.all((index >= 0) & (index < shape), axis=-1)
        index = np.clip(index, 0, shape - 1)
        return inside & self.occupied[index[..., 0], index[..., 1], index[..., 2]]


def _dilate(occupied: np.ndarray) -> np.ndarray:
    """Grow the occupied set by one cell in each of the 26 directions."""
    grown = occupied.copy()
    padded = np.pad(occupied, 1)
    x, y, z = occupied.shape
    for dx in range(3):
        for dy in range(3):
            for dz in range(3):
                grown |= padded[dx : dx + x, dy : dy + y, dz : dz + z]
    return grown


def occupancy_from_sdf(
    sdf_at: Callable[[np.ndarray], np.ndarray],
    bounds: np.ndarray,
    *,
    resolution: int = 32,
    margin: float = 0.0,
    lipschitz: float = 1.5,
) -> OccupancyGrid:
    """The cells that may hold the zero level set of an SDF, and their neighbours.

    A cell holds surface only if ``|sdf(centre)| <= L * half_diagonal`` for an SDF whose gradient is at
    most ``L`` (``lipschitz``; an exact SDF has 1, a learnt one is kept near 1 by the eikonal term, and
    1.5 leaves room). ``margin`` widens the shell (e.g. a few beta, where the density still carries
    weight). The occupied set is then grown by one cell, so a ray marched at half a cell per step
    cannot step over a surface cell, and ``occupied`` never drops a cell that holds surface.

    Args:
        sdf_at: (N, 3) points -> (N,) signed distances (e.g. a fitted model at one frame).
        bounds: (2, 3) ``[lo, hi]`` box of the grid.
        resolution: cells per axis.
    """
    if not is_int(resolution) or resolution < 1:
        raise DataError(f"resolution must be a positive integer; got {resolution!r}")
    empty = OccupancyGrid(np.asarray(bounds, np.float64), np.zeros((resolution,) * 3, bool))
    centres = empty.centres()
    sdf = np.asarray(sdf_at(centres), np.float64).reshape(-1)
    if sdf.shape != (len(centres),):
        raise ShapeError(f"sdf_at must return ({len(centres)},) values; got {sdf.shape}")
    half_diagonal = 0.5 * float(np.linalg.norm(empty.cell_size))
    near_surface = ~(np.abs(sdf) > lipschitz * half_diagonal + margin)  # NaN counts as occupied: never skip it
    return OccupancyGrid(empty.bounds, _dilate(near_surface.reshape((resolution,) * 3)))


def occupied_points(
    grid: OccupancyGrid,
    origins: np.ndarray,
    directions: np.ndarray,
    near: np.ndarray,
    far: np.ndarray,
    n_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_points`` distances per ray, spread evenly over the parts of ``[near, far]`` in occupied cells.

    The ray is marched at half the smallest cell edge; the occupied steps become intervals of weight
    one and :func:`sample_from_weights` spreads the points over them, so empty space gets none.

    Args:
        origins, directions: (R, 3) rays; ``near``, ``far`` (R,) their segments in the box.

    Returns:
        ``t`` (R, n_points) increasing distances, and the ray's occupied extent ``first`` (R,),
        ``last`` (R,) (both 0 for a ray that meets no occupied cell: its points are all at 0 and
        it needs no evaluation).
    """
    o, d = np.asarray(origins, np.float64), np.asarray(directions, np.float64)
    near64, far64 = np.asarray(near, np.float64), np.asarray(far, np.float64)
    n_rays = len(o)
    step = 0.5 * float(grid.cell_size.min()) / max(float(np.linalg.norm(d, axis=1).max(initial=1.0)), 1e-12)
    t = np.zeros((n_rays, n_points))
    first, last = np.zeros(n_rays), np.zeros(n_rays)
    rays = np.flatnonzero(far64 > near64)  # rays that miss the box are not marched
    if len(rays) == 0:
        return t, first, last
    o, d, near64, far64 = o[rays], d[rays], near64[rays], far64[rays]
    n_steps = max(1, int(np.ceil(float(np.max(far64 - near64)) / step)))
    edges = near64[:, None] + step * np.arange(n_steps + 1)[None, :]
    starts, ends = np.minimum(edges[:, :-1], far64[:, None]), np.minimum(edges[:, 1:], far64[:, None])
    # cell index of every step's midpoint, in float32 (an index needs no more) over a flat grid
    scale = (1.0 / grid.cell_size).astype(np.float32)
    mids = (0.5 * (starts + ends)).astype(np.float32)
    shape = np.array(grid.occupied.shape)
    flat = np.zeros(mids.shape, np.int64)
    inside = ends > starts
    for k in range(3):
        index = np.floor(
            ((o[:, k] - grid.bounds[0, k]) * scale[k]).astype(np.float32)[:, None]
            + (d[:, k] * scale[k]).astype(np.float32)[:, None] * mids
        ).astype(np.int64)
        inside &= (index >= 0) & (index < shape[k])
        flat = flat * shape[k] + np.clip(index, 0, shape[k] - 1)
    occupied = inside & np.take(grid.occupied.reshape(-1), flat)
    count = np.cumsum(occupied, axis=1, dtype=np.int64)  # (R, K): occupied steps so far
    total = count[:, -1]
    hit = total > 0
    # the points sit at the quantiles (j + 0.5) / n of the occupied length (all steps are equally long
    # but the last; see sample_from_weights): the m-th occupied step by one flat searchsorted
    rows = np.arange(len(rays))
    target = (np.arange(n_points) + 0.5)[None, :] / n_points * total[:, None]  # (R, n) in occupied steps
    offset = (rows * (n_steps + 1))[:, None]
    k = np.searchsorted((count + offset).reshape(-1), (target + offset).reshape(-1), side="right").reshape(target.shape)
    k = np.minimum(k - (rows * n_steps)[:, None], n_steps - 1)  # flat index -> column
    below = np.where(k > 0, count[rows[:, None], np.maximum(k - 1, 0)], 0)
    frac = np.clip(target - below, 0.0, 1.0)
    s0, s1 = starts[rows[:, None], k], ends[rows[:, None], k]
    t[rays] = np.where(hit[:, None], s0 + frac * (s1 - s0), 0.0)
    first[rays] = np.where(hit, starts[rows, np.argmax(occupied, axis=1)], 0.0)
    last[rays] = np.where(hit, ends[rows, n_steps - 1 - np.argmax(occupied[:, ::-1], axis=1)], 0.0)
    return t, first, last
