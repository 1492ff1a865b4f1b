"""SDF-based volume rendering (VolSDF-style): the small functions the one pipeline
(:mod:`resfields.tasks.nerf.pipeline`) is made of, shared by every backend.

Two halves:

* Host side (NumPy, float32 outputs): rays from a camera, ray-box intersection, stratified intervals
  along each ray and the sample positions. Rays and sample positions are data: they enter the field as
  inputs, so nothing here needs gradients.
* Tensor side (duck-typed): density from signed distance, quadrature weights, accumulation and
  background compositing. These only use what torch tensors and tinygrad Tensors share with the same
  meaning and positional arguments (arithmetic, ``exp``, ``abs``, ``sign``, ``sum(axis)``,
  ``cumsum(axis)``, ``unsqueeze``, ``reshape``, basic slicing), so the same code runs on either; the
  module never imports a framework. Callers hand in ``to_tensor`` / ``to_numpy`` converters.

Conventions: a ray is ``origin + t * direction``; with unit directions (as :func:`rays_from_camera` gives)
``t`` is the distance along the ray, so ``depth`` is ray distance, not camera z-depth. Samples are
intervals ``[t_start, t_end)`` that tile ``[near, far]``; the field is evaluated at interval midpoints
and each interval's length is its quadrature weight, so deltas are exact. Rays that miss the scene box
get zero-length intervals, hence exactly zero weights, so every array keeps a fixed shape (what a
compiled backend needs) without any masking branch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.cameras import Camera, generate_rays
from resfields.tasks.common.values import is_int

__all__ = [
    "accumulate_along_rays",
    "laplace_density",
    "ray_box_intersection",
    "rays_from_camera",
    "render_weight_from_density",
    "sample_points",
    "stratified_samples",
]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- host side (NumPy)


def _rays(origins: Any, directions: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 (R, 3) origins and directions, checked: finite, matching shapes, non-zero directions."""
    o = np.asarray(origins, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] != 3:
        raise ShapeError(f"origins must have shape (R, 3); got {o.shape}")
    if d.shape != o.shape:
        raise ShapeError(f"directions must have the shape of origins {o.shape}; got {d.shape}")
    if not (np.isfinite(o).all() and np.isfinite(d).all()):
        raise DataError("origins and directions must be finite")
    if np.any(np.all(d == 0, axis=1)):
        raise DataError("every ray direction must be non-zero")
    return o, d


def _bounds(bounds: Any) -> np.ndarray:
    """float64 (2, 3) box ``[lo, hi]``, checked: finite and lo < hi on every axis."""
    b = np.asarray(bounds, dtype=np.float64)
    if b.shape != (2, 3):
        raise ShapeError(f"bounds must have shape (2, 3) ([lo, hi]); got {b.shape}")
    if not np.isfinite(b).all() or np.any(b[0] >= b[1]):
        raise DataError(f"bounds must be finite with lo < hi on every axis; got {b.tolist()}")
    return b


def rays_from_camera(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """One ray per pixel centre, flattened row-major: ``origins`` (H*W, 3), unit ``directions`` (H*W, 3),
    float32. Row ``v * W + u`` is the ray through pixel ``(u + 0.5, v + 0.5)``."""
    origins, directions = generate_rays(camera)
    return origins.reshape(-1, 3).astype(np.float32), directions.reshape(-1, 3).astype(np.float32)


def ray_box_intersection(origins: Any, directions: Any, bounds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each ray ``origin + t * direction`` (t >= 0) crosses the axis-aligned box ``bounds``.

    Args:
        origins: (R, 3) ray origins.
        directions: (R, 3) non-zero ray directions (need not be unit; ``t`` is in multiples of them).
        bounds: (2, 3) ``[lo, hi]`` corners of the box.

    Returns:
        ``near`` (R,), ``far`` (R,) float32 and ``hit`` (R,) bool. ``near`` is clamped at 0, so a camera
        inside the box starts at its origin. Rays that miss (or only touch the box in a single point, or
        have it behind them) get ``hit = False`` and ``near = far = 0``.
    """
    o, d = _rays(origins, directions)
    lo, hi = _bounds(bounds)
    parallel = d == 0
    # A direction component of 0 gives 0/0 = NaN on the slab's own plane; such a slab either contains
    # the whole ray (origin inside it) or none of it, so it is decided from the origin instead.
    safe_d = np.where(parallel, 1.0, d)
    with np.errstate(over="ignore"):  # a tiny component overflows to +-inf: the right slab limit
        t_lo, t_hi = (lo - o) / safe_d, (hi - o) / safe_d
    inside_slab = (o >= lo) & (o <= hi)
    enter = np.where(parallel, np.where(inside_slab, -np.inf, np.inf), np.minimum(t_lo, t_hi))
    leave = np.where(parallel, np.where(inside_slab, np.inf, -np.inf), np.maximum(t_lo, t_hi))
    # Clipped into float32's range (a box behind the ray gives far < 0, so far = 0 = near: a miss), and
    # hit decided in float32 so that it always means far > near in the returned values.
    near = np.clip(enter.max(axis=1), 0.0, _FLOAT32_MAX).astype(np.float32)
    far = np.clip(leave.min(axis=1), 0.0, _FLOAT32_MAX).astype(np.float32)
    hit = far > near
    return np.where(hit, near, 0.0).astype(np.float32), np.where(hit, far, 0.0).astype(np.float32), hit


def _edge_fractions(n_rays: int, n_samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """(R, S + 1) interval edges as fractions of ``[near, far]``: 0, 1/S, ..., 1, interior edges jittered.

    Each interior edge moves uniformly within half a bin of its regular place, so the edges stay
    ordered, the intervals still tile [0, 1] and every interval midpoint stays inside its regular bin
    ``[i / S, (i + 1) / S)`` while covering it over many draws.
    """
    fractions = np.broadcast_to(np.arange(n_samples + 1, dtype=np.float64), (n_rays, n_samples + 1)).copy()
    if rng is not None:
        fractions[:, 1:-1] += rng.random((n_rays, n_samples - 1)) - 0.5
    return fractions / n_samples


def stratified_samples(
    near: Any, far: Any, n_samples: int, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n_samples`` intervals per ray that tile ``[near, far]`` exactly.

    Args:
        near: (R,) start of each ray's segment.
        far: (R,) end of each ray's segment, ``far >= near`` (equal gives zero-length intervals).
        n_samples: S, the number of intervals per ray.
        rng: None for evaluation: S equal intervals. A generator for training: the interior edges are
            jittered (see :func:`_edge_fractions`), so the midpoints move randomly inside their bins.

    Returns:
        ``t_starts`` (R, S), ``t_ends`` (R, S) float32, with ``t_starts[:, 0] = near``,
        ``t_ends[:, -1] = far`` and ``t_ends[:, i] = t_starts[:, i + 1]``.
    """
    if not is_int(n_samples) or n_samples < 1:
        raise DataError(f"n_samples must be a positive integer; got {n_samples!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise DataError(f"rng must be a numpy.random.Generator or None; got {type(rng).__name__}")
    near64, far64 = np.asarray(near, dtype=np.float64), np.asarray(far, dtype=np.float64)
    if near64.ndim != 1 or far64.shape != near64.shape:
        raise ShapeError(f"near and far must both have shape (R,); got {near64.shape} and {far64.shape}")
    if not (np.isfinite(near64).all() and np.isfinite(far64).all()) or np.any(far64 < near64):
        raise DataError("near and far must be finite with far >= near")
    fractions = _edge_fractions(len(near64), int(n_samples), rng)
    edges = near64[:, None] + (far64 - near64)[:, None] * fractions
    edges[:, -1] = far64  # near + (far - near) * 1 need not round back to far
    edges = edges.astype(np.float32)
    return edges[:, :-1], edges[:, 1:]


def sample_points(origins: Any, directions: Any, t_starts: Any, t_ends: Any) -> np.ndarray:
    """Points at the interval midpoints: ``origins`` (R, 3), ``directions`` (R, 3), ``t_starts`` (R, S),
    ``t_ends`` (R, S) -> ``points`` (R, S, 3) float32."""
    o, d = _rays(origins, directions)
    starts, ends = np.asarray(t_starts, dtype=np.float64), np.asarray(t_ends, dtype=np.float64)
    if starts.ndim != 2 or starts.shape[0] != len(o) or ends.shape != starts.shape:
        raise ShapeError(f"t_starts and t_ends must both have shape ({len(o)}, S); got {starts.shape}, {ends.shape}")
    mids = 0.5 * (starts + ends)
    return (o[:, None, :] + d[:, None, :] * mids[..., None]).astype(np.float32)


# ----------------------------------------------------------------------------- tensor side (duck-typed)


def laplace_density(sdf: Any, beta: Any) -> Any:
    """VolSDF density ``sigma = Psi_beta(-sdf) / beta`` with ``Psi_beta`` the CDF of a zero-mean Laplace
    distribution of scale ``beta``: ``1 / beta`` deep inside (sdf < 0), ``1 / (2 beta)`` on the surface,
    0 far outside.

    Args:
        sdf: (...) signed distances, negative inside, as a torch or tinygrad tensor.
        beta: positive scalar (tensor or float), e.g. ``beta_param.abs() + beta_min`` when learnt.

    Returns:
        sigma (...), same type and shape as ``sdf``.
    """
    if isinstance(beta, int | float) and not beta > 0:
        raise DataError(f"beta must be positive; got {beta!r}")
    # Psi(x) = 0.5 + 0.5 sign(x) (1 - exp(-|x| / beta)) is the piecewise CDF in one branch-free line;
    # the exponent is never positive, so it cannot overflow however small beta is.
    tail = 1 - (-(sdf.abs()) / beta).exp()
    return (0.5 - 0.5 * sdf.sign() * tail) / beta


def render_weight_from_density(t_starts: Any, t_ends: Any, sigma: Any) -> tuple[Any, Any, Any]:
    """Quadrature of the volume-rendering integral over intervals.

    Args:
        t_starts: (R, S) interval starts (tensor).
        t_ends: (R, S) interval ends (tensor).
        sigma: (R, S) non-negative densities at the intervals (tensor).

    Returns:
        ``weights`` (R, S), ``transmittance`` (R, S), ``alpha`` (R, S) with ``delta = t_ends - t_starts``,
        ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` and
        ``w_i = T_i alpha_i``; ``sum_i w_i = 1 - exp(-sum_i sigma_i delta_i)``.
    """
    optical_depth = sigma * (t_ends - t_starts)
    # Exclusive prefix sum without concatenation (torch.cat and Tensor.cat differ). Its rounding error is
    # about one ulp of the running sum, and for non-negative terms the rounded inclusive sum is never
    # below its own last term, so this is never negative and the transmittance never exceeds 1.
    before = optical_depth.cumsum(-1) - optical_depth
    transmittance = (-before).exp()
    alpha = 1 - (-optical_depth).exp()
    return transmittance * alpha, transmittance, alpha


def accumulate_along_rays(weights: Any, values: Any | None = None) -> Any:
    """Weighted sum along each ray: ``weights`` (R, S) and ``values`` (R, S, C) -> (R, C).

    ``values=None`` gives the opacity ``sum_i w_i`` as (R, 1). Depth is the accumulation of the interval
    midpoints (R, S, 1); normals that of per-sample normals (R, S, 3), left unnormalised.
    """
    if values is None:
        return weights.sum(-1).unsqueeze(-1)
    return (weights.unsqueeze(-1) * values).sum(-2)
