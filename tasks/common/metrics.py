"""Evaluation metrics of the tasks: image (MSE, PSNR, SSIM), mesh (Chamfer L1, normal consistency) and
scene flow (EPE and accuracies). NumPy in float64; every metric returns Python floats."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.geometry import check_mesh, face_cross, sample_surface
from resfields.tasks.common.values import is_int

__all__ = [
    "chamfer_l1",
    "flow_metrics",
    "mean_ssim",
    "mesh_metrics",
    "mse",
    "normal_consistency",
    "psnr",
    "psnr_from_mse",
    "sample_mesh_surface",
    "ssim",
]

# SSIM constants of Wang et al. 2004, with the Gaussian window skimage uses for gaussian_weights=True.
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _finite(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or inf")
    return arr


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _finite("pred", pred), _finite("target", target)
    if p.shape != t.shape:
        raise ShapeError(f"pred has shape {p.shape} but target has shape {t.shape}; they must match")
    if p.size == 0:
        raise ShapeError("pred and target are empty; a metric needs at least one value")
    return p, t


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{name} must be positive and finite; got {value!r}")
    return value


def _points(name: str, value: Any, allow_empty: bool = False) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeError(f"{name} must have shape (N, 3); got {arr.shape}")
    if len(arr) == 0 and not allow_empty:
        raise ShapeError(f"{name} is empty; at least one point is needed")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or inf")
    return arr


def _unit(name: str, vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise DataError(f"{name} contains zero-length vectors, which have no direction")
    return vectors / norms


# ----------------------------------------------------------------------------- images


def mse(pred: Any, target: Any) -> float:
    """Mean squared error over all values of ``pred`` and ``target`` (any equal shapes)."""
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def psnr_from_mse(mse: float, max_value: float = 1.0) -> float:
    """``10 log10(max_value^2 / mse)`` in dB; inf when ``mse == 0``."""
    value = float(mse)
    if not (math.isfinite(value) and value >= 0):
        raise DataError(f"mse must be finite and non-negative; got {mse!r}")
    peak = _positive("max_value", max_value)
    if value == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / value)


def psnr(pred: Any, target: Any, max_value: float = 1.0) -> float:
    """PSNR in dB of the MSE pooled over all values of ``pred`` and ``target`` (any equal shapes); inf
    when they are identical. For a video this is the PSNR of the whole clip, not a mean of per-frame PSNRs."""
    return psnr_from_mse(mse(pred, target), max_value)


def ssim(pred: Any, target: Any, data_range: float = 1.0) -> float:
    """Structural similarity of one image ``pred`` vs ``target``, each (H, W) or (H, W, C).

    Gaussian-weighted statistics (sigma 1.5, window truncated at 3.5 sigma: 11 x 11), population
    (co)variances, ``K1 = 0.01``, ``K2 = 0.03``; the SSIM map is averaged over pixels at least 5 pixels
    from the border and over channels. Matches ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``. Images need H, W >= 11.
    """
    p, t = _pair(pred, target)
    if p.ndim not in (2, 3):
        raise ShapeError(f"ssim takes one image (H, W) or (H, W, C); got shape {p.shape}")
    radius = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
    window = 2 * radius + 1
    if p.shape[0] < window or p.shape[1] < window:
        raise ShapeError(f"ssim needs images of at least {window} x {window} pixels; got {p.shape[:2]}")
    dynamic = _positive("data_range", data_range)
    sigma = (_SSIM_SIGMA, _SSIM_SIGMA) + (0.0,) * (p.ndim - 2)  # sigma 0: channels are not mixed

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigma=sigma, truncate=_SSIM_TRUNCATE, mode="reflect")

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p * mu_p
    var_t = blur(t * t) - mu_t * mu_t
    cov = blur(p * t) - mu_p * mu_t
    c1 = (_SSIM_K1 * dynamic) ** 2
    c2 = (_SSIM_K2 * dynamic) ** 2
    numerator = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    denominator = (mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2)
    ssim_map = numerator / denominator
    # Border pixels see the reflected padding; the standard SSIM leaves them out.
    return float(ssim_map[radius:-radius, radius:-radius].mean())


def mean_ssim(pred_frames: Any, target_frames: Any, data_range: float = 1.0) -> float:
    """Mean over frames of :func:`ssim` for videos ``pred_frames`` and ``target_frames``, (T, H, W, C) or
    (T, H, W)."""
    p, t = _pair(pred_frames, target_frames)
    if p.ndim not in (3, 4):
        raise ShapeError(f"mean_ssim takes videos (T, H, W, C) or (T, H, W); got shape {p.shape}")
    return float(np.mean([ssim(a, b, data_range) for a, b in zip(p, t, strict=True)]))


# ----------------------------------------------------------------------------- surfaces


def chamfer_l1(points_a: Any, points_b: Any) -> float:
    """Symmetric "L1" Chamfer distance of point sets ``points_a`` (N, 3) and ``points_b`` (M, 3).

    ``0.5 * (mean_{a in A} min_{b in B} |a - b| + mean_{b in B} min_{a in A} |a - b|)`` with ``|.|`` the
    Euclidean norm (not squared): the "Chamfer-L1" of the ResFields / NDR / Occupancy Networks
    evaluations, in the units of the points.
    """
    a, b = _points("points_a", points_a), _points("points_b", points_b)
    (a_to_b, _), (b_to_a, _) = _nearest_both_ways(a, b)
    return _chamfer(a_to_b, b_to_a)


def _nearest_both_ways(a: np.ndarray, b: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(distance, index) of the nearest b for every a, and of the nearest a for every b."""
    return cKDTree(b).query(a, workers=-1), cKDTree(a).query(b, workers=-1)


def _chamfer(a_to_b: np.ndarray, b_to_a: np.ndarray) -> float:
    return float(0.5 * (a_to_b.mean() + b_to_a.mean()))


def _consistency(na: np.ndarray, nb: np.ndarray, nearest_b: np.ndarray, nearest_a: np.ndarray) -> float:
    a_to_b = np.abs(np.sum(na * nb[nearest_b], axis=1)).mean()
    b_to_a = np.abs(np.sum(nb * na[nearest_a], axis=1)).mean()
    return float(0.5 * (a_to_b + b_to_a))


def normal_consistency(points_a: Any, normals_a: Any, points_b: Any, normals_b: Any) -> float:
    """Normal consistency of two oriented point sets: points (N, 3) / (M, 3), normals of the same shapes.

    ``0.5 * (mean_a |n_a . n_b(a)| + mean_b |n_b . n_a(b)|)`` where ``b(a)`` is the point of B nearest
    to ``a`` and vice versa. Normals are normalised here; the absolute value ignores their orientation.
    1 is perfect, 0 means perpendicular everywhere.
    """
    pa, pb = _points("points_a", points_a), _points("points_b", points_b)
    na, nb = _points("normals_a", normals_a), _points("normals_b", normals_b)
    if na.shape != pa.shape:
        raise ShapeError(f"normals_a has shape {na.shape} but points_a has shape {pa.shape}")
    if nb.shape != pb.shape:
        raise ShapeError(f"normals_b has shape {nb.shape} but points_b has shape {pb.shape}")
    na, nb = _unit("normals_a", na), _unit("normals_b", nb)
    (_, nearest_b), (_, nearest_a) = _nearest_both_ways(pa, pb)
    return _consistency(na, nb, nearest_b, nearest_a)


def sample_mesh_surface(
    vertices: Any, faces: Any, n: int, rng: np.random.Generator | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly distributed over the area of a triangle mesh, with their face normals.

    vertices (V, 3), faces (F, 3) integer indices; ``rng`` a Generator or a seed. Returns ``points``
    (n, 3) and unit ``normals`` (n, 3), the normals following the faces' winding (counter-clockwise
    seen from the side the normal points to). DataError for a mesh without area.
    """
    points, face_ids, _ = sample_surface(vertices, faces, n, rng, where="sample_mesh_surface")
    cross = face_cross(vertices, faces)[face_ids]
    return points, cross / np.linalg.norm(cross, axis=1, keepdims=True)  # sampled faces have positive area


def mesh_metrics(
    pred_vertices: Any,
    pred_faces: Any,
    gt_vertices: Any,
    gt_faces: Any,
    n_samples: int = 100_000,
    seed: int = 0,
) -> dict[str, float]:
    """Chamfer L1 and normal consistency between a predicted and a ground-truth triangle mesh.

    Each mesh (vertices (V, 3), faces (F, 3)) is sampled with ``n_samples`` area-uniform surface
    points (``seed`` fixes the samples); see :func:`chamfer_l1` and :func:`normal_consistency`.
    A predicted mesh with no faces (or no area), e.g. marching cubes finding no zero crossing, is a
    failed but valid reconstruction: it scores ``{"chamfer_l1": inf, "normal_consistency": 0.0}``.
    An empty ground-truth mesh is an error (DataError).
    """
    pv, pf = check_mesh(pred_vertices, pred_faces, "mesh_metrics: predicted mesh")
    gv, gf = check_mesh(gt_vertices, gt_faces, "mesh_metrics: ground-truth mesh")
    if not is_int(n_samples) or n_samples < 1:
        raise DataError(f"n_samples must be a positive integer; got {n_samples!r}")
    if not np.any(face_cross(gv, gf)):
        raise DataError(f"the ground-truth mesh has no surface ({len(gf)} faces, total area 0)")
    rng = np.random.default_rng(seed)
    gt_points, gt_normals = sample_mesh_surface(gv, gf, n_samples, rng)
    if not np.any(face_cross(pv, pf)):
        return {"chamfer_l1": math.inf, "normal_consistency": 0.0}
    pred_points, pred_normals = sample_mesh_surface(pv, pf, n_samples, rng)
    # one nearest-neighbour query each way serves both metrics
    (pred_to_gt, nearest_gt), (gt_to_pred, nearest_pred) = _nearest_both_ways(pred_points, gt_points)
    return {
        "chamfer_l1": _chamfer(pred_to_gt, gt_to_pred),
        "normal_consistency": _consistency(
            _unit("pred normals", pred_normals), _unit("gt normals", gt_normals), nearest_gt, nearest_pred
        ),
    }


# ----------------------------------------------------------------------------- scene flow


def flow_metrics(pred: Any, gt: Any) -> dict[str, float]:
    """Scene-flow metrics of predicted vs ground-truth displacements, each (N, 3), FlowNet3D convention.

    With ``epe_i = |pred_i - gt_i|`` (Euclidean, in the task's normalised coordinates) and the relative
    error ``rel_i = epe_i / |gt_i|`` (for ``gt_i = 0``: 0 if ``epe_i = 0``, else inf):

    - ``epe``: mean of ``epe_i``;
    - ``acc_strict``: fraction with ``epe < 0.05`` or ``rel < 0.05``;
    - ``acc_relax``: fraction with ``epe < 0.1`` or ``rel < 0.1``;
    - ``outliers``: fraction with ``epe > 0.3`` or ``rel > 0.1``.

    The absolute thresholds assume those normalised units (FlowNet3D used metres).
    """
    p, g = _pair(pred, gt)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ShapeError(f"flow_metrics takes (N, 3) displacements; got shape {p.shape}")
    epe = np.linalg.norm(p - g, axis=1)
    gt_norm = np.linalg.norm(g, axis=1)
    relative = np.where(epe == 0, 0.0, np.inf)
    moving = gt_norm > 0
    relative[moving] = epe[moving] / gt_norm[moving]
    return {
        "epe": float(epe.mean()),
        "acc_strict": float(np.mean((epe < 0.05) | (relative < 0.05))),
        "acc_relax": float(np.mean((epe < 0.1) | (relative < 0.1))),
        "outliers": float(np.mean((epe > 0.3) | (relative > 0.1))),
    }
