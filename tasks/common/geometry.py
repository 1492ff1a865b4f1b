"""Triangle-mesh geometry of the tasks, once: validation, surface sampling, distances, ray casting, marching cubes.

A mesh is vertices ``(V, 3)`` float64 and faces ``(F, 3)`` int64 indices into them. Every function
checks its mesh with :func:`check_mesh`, so a bad mesh gets the same error whichever task, metric or
renderer it was handed to.

The sampling helpers implement the temporal-SDF recipe of the paper (surface points, points jittered
near the surface, uniform points in the box); :func:`extract_mesh` turns a sampled field back into a mesh.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.values import check_count, check_positive, is_int, is_real

__all__ = [
    "RayHits",
    "cast_rays",
    "check_faces",
    "check_mesh",
    "check_points",
    "check_vertices",
    "extract_mesh",
    "face_cross",
    "grid_points",
    "is_watertight",
    "points_from_barycentric",
    "sample_surface",
    "sdf_samples",
    "signed_distance",
    "signed_volume",
]


# ----------------------------------------------------------------------------- validation


def check_vertices(v: Any, where: str, what: str = "vertices") -> np.ndarray:
    """(V, 3) float64 C-contiguous copy of ``v``; ShapeError for a wrong shape, DataError for
    non-numeric or non-finite values. ``where`` and ``what`` (the array's name) start the messages."""
    arr = np.asarray(v)
    if arr.ndim != 2 or arr.shape[1] != 3:
        rows = "V" if what == "vertices" else "n"
        raise ShapeError(f"{where}: {what} must have shape ({rows}, 3), got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{where}: {what} must be real numbers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {what} contain NaN or infinite values")
    return arr


def check_points(p: Any, where: str) -> np.ndarray:
    """(n, 3) float64 C-contiguous copy of query points ``p``; errors as for :func:`check_vertices`."""
    return check_vertices(p, where, "points")


def check_faces(f: Any, n_vertices: int, where: str) -> np.ndarray:
    """(F, 3) int64 copy of ``f``; ShapeError for a wrong shape, DataError when an index is not an integer
    or not in ``[0, n_vertices)``. An empty 1-D array (``[]``) is a mesh without faces."""
    arr = np.asarray(f)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeError(f"{where}: faces must have shape (F, 3), got {arr.shape}")
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{where}: face indices must be integers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_vertices:
        raise DataError(f"{where}: face indices must lie in [0, {n_vertices}), found range [{lo}, {hi}]")
    return arr


def check_mesh(v: Any, f: Any, where: str, *, need_faces: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and faces (F, 3) int64, checked (:func:`check_vertices`, :func:`check_faces`)
    and copied; with ``need_faces`` a mesh without faces is a DataError too."""
    vertices = check_vertices(v, where)
    faces = check_faces(f, len(vertices), where)
    if need_faces and len(faces) == 0:
        raise DataError(f"{where}: the mesh has no faces")
    return vertices, faces


# ----------------------------------------------------------------------------- surfaces


def face_cross(v: Any, f: Any) -> np.ndarray:
    """(F, 3) cross products of the edges of each face of vertices (V, 3), faces (F, 3): along the
    winding normal (counter-clockwise seen from where it points), length twice the face's area."""
    vertices, faces = check_mesh(v, f, "face_cross")
    return _face_cross(vertices[faces])


def _face_cross(corners: np.ndarray) -> np.ndarray:
    return np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])


def is_watertight(faces: Any) -> bool:
    """True when every undirected edge of the faces (F, 3) is shared by exactly two faces (closed surface)."""
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ShapeError(f"is_watertight: faces must have shape (F, 3), got {f.shape}")
    if len(f) == 0:
        return False
    f = f.astype(np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    keys = edges[:, 0] * (int(f.max()) + 1) + edges[:, 1]
    _, counts = np.unique(keys, return_counts=True)
    return bool(np.all(counts == 2))


def signed_volume(v: Any, f: Any) -> float:
    """Signed volume enclosed by a closed mesh, vertices (V, 3), faces (F, 3); positive for outward normals."""
    vertices, faces = check_mesh(v, f, "signed_volume", need_faces=True)
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    # Relative to the centroid: the sum is origin-independent for closed meshes but loses fewer digits.
    centroid = vertices.mean(axis=0)
    a, b, c = a - centroid, b - centroid, c - centroid
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def sample_surface(
    v: Any, f: Any, n: int, rng: np.random.Generator | int | None, *, where: str = "sample_surface"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points uniformly distributed over the surface area of vertices (V, 3), faces (F, 3).

    ``rng`` is a Generator or a seed. Returns points (n, 3) float64, face_ids (n,) int64 and
    barycentric (n, 3) float64 (rows sum to 1), with
    ``points == points_from_barycentric(v, f, face_ids, barycentric)``. DataError, starting with
    ``where``, for a mesh without area.
    """
    vertices, faces = check_mesh(v, f, where)
    n = check_count(n, "n", where)
    tri = vertices[faces]
    cdf = np.cumsum(0.5 * np.linalg.norm(_face_cross(tri), axis=1))
    if not (len(cdf) and cdf[-1] > 0.0):
        raise DataError(f"{where}: the mesh has no surface to sample ({len(faces)} faces, total area 0)")
    generator = np.random.default_rng(rng)
    # side="right" skips zero-area faces: the first face whose cumulative area exceeds the draw is picked.
    face_ids = np.searchsorted(cdf, generator.random(n) * cdf[-1], side="right")
    face_ids = np.minimum(face_ids, len(faces) - 1).astype(np.int64)
    # sqrt warps the unit square onto the triangle with uniform density.
    r1, r2 = generator.random(n), generator.random(n)
    root = np.sqrt(r1)
    barycentric = np.stack([1.0 - root, root * (1.0 - r2), root * r2], axis=1)
    points = np.einsum("nk,nkd->nd", barycentric, tri[face_ids])
    return points, face_ids, barycentric


def points_from_barycentric(v: Any, f: Any, face_ids: Any, barycentric: Any) -> np.ndarray:
    """Surface points (n, 3) at faces ``face_ids`` (n,) with weights ``barycentric`` (n, 3) on vertices (V, 3).

    With the faces of another frame of a shared-topology sequence this follows the same material
    points through time, which makes scene-flow targets exact.
    """
    vertices, faces = check_mesh(v, f, "points_from_barycentric", need_faces=True)
    ids = np.asarray(face_ids)
    bary = np.asarray(barycentric)
    if ids.ndim != 1 or bary.shape != (len(ids), 3):
        raise ShapeError(
            f"points_from_barycentric: face_ids must be (n,) and barycentric (n, 3), got {ids.shape} and {bary.shape}"
        )
    if len(ids) and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(faces)):
        raise DataError(f"points_from_barycentric: face_ids must be integers in [0, {len(faces)})")
    if bary.dtype.kind not in "fiu" or not np.isfinite(bary).all():
        raise DataError("points_from_barycentric: barycentric coordinates must be finite numbers")
    return np.einsum("nk,nkd->nd", bary.astype(np.float64), vertices[faces[ids.astype(np.int64)]])


# ----------------------------------------------------------------------------- distances and fields


def signed_distance(v: Any, f: Any, points: Any) -> np.ndarray:
    """Exact signed distance (n,) from ``points`` (n, 3) to a closed mesh (V, 3), (F, 3): positive outside.

    The magnitude is the exact point-to-triangle distance (``pcu.closest_points_on_mesh``); the
    sign comes from the fast generalised winding number, so it does not depend on face orientation.
    DataError when the mesh is not watertight (inside would be undefined).
    """
    import point_cloud_utils as pcu

    vertices, faces = check_mesh(v, f, "signed_distance", need_faces=True)
    query = check_points(points, "signed_distance")
    if not is_watertight(faces):
        raise DataError("signed_distance: the mesh is not watertight (some edge is not shared by exactly two faces)")
    if len(query) == 0:
        return np.zeros(0, dtype=np.float64)
    # Not pcu.signed_distance_to_mesh: in pcu 0.34 its magnitudes are off by up to ~5 % (1.58 instead of
    # 1.5 at (2, 0, 0) for the unit cube), while closest_points_on_mesh is exact.
    dist, _, _ = pcu.closest_points_on_mesh(query, vertices, faces)
    winding = pcu.triangle_soup_fast_winding_number(vertices, faces, query)
    return np.where(np.abs(winding) > 0.5, -dist, dist).astype(np.float64)


def sdf_samples(
    v: Any,
    f: Any,
    rng: np.random.Generator,
    n_surface: int,
    n_near: int,
    n_uniform: int,
    sigma: float = 0.01,
    bound: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """SDF training samples on a closed mesh (V, 3), (F, 3): points (N, 3) float32, sdf (N,) float32.

    ``N = n_surface + n_near + n_uniform``, in that order: surface points (sdf 0), surface points
    jittered by Gaussian noise of std ``sigma``, and uniform points in ``[-bound, bound]^3``. Targets of
    the last two groups are :func:`signed_distance` at the float32 points that are returned.
    """
    where = "sdf_samples"
    vertices, faces = check_mesh(v, f, where, need_faces=True)
    counts = [
        check_count(n, name, where)
        for n, name in ((n_surface, "n_surface"), (n_near, "n_near"), (n_uniform, "n_uniform"))
    ]
    sigma = check_positive(sigma, "sigma", where)
    bound = check_positive(bound, "bound", where)
    surface, _, _ = sample_surface(vertices, faces, counts[0] + counts[1], rng, where=where)
    near = surface[counts[0] :] + rng.normal(scale=sigma, size=(counts[1], 3))
    uniform = rng.uniform(-bound, bound, size=(counts[2], 3))
    points = np.concatenate([surface[: counts[0]], near, uniform]).astype(np.float32)
    sdf = np.zeros(len(points), dtype=np.float32)
    sdf[counts[0] :] = signed_distance(vertices, faces, points[counts[0] :].astype(np.float64))
    return points, sdf


def grid_points(resolution: int, bound: float = 1.0) -> np.ndarray:
    """(R^3, 3) float32 points of the grid ``linspace(-bound, bound, R)`` per axis, C order with axis 0 = x.

    ``values.reshape(R, R, R)[i, j, k]`` is the value at ``(x_i, y_j, z_k)``, as :func:`extract_mesh` expects.
    """
    if not is_int(resolution) or resolution < 2:
        raise ShapeError(f"grid_points: resolution must be an integer >= 2, got {resolution!r}")
    bound = check_positive(bound, "bound", "grid_points")
    axis = np.linspace(-bound, bound, int(resolution))
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float32)


def extract_mesh(sdf_grid: Any, bound: float = 1.0, level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on an (R, R, R) grid laid out as :func:`grid_points`: vertices (V, 3) float64, faces (F, 3) int64.

    Vertices are in world coordinates ``[-bound, bound]^3``; faces are oriented outward for a field
    that is positive outside. Empty ``(0, 3)`` arrays when the level is never crossed.
    """
    import mcubes

    grid = np.asarray(sdf_grid)
    if grid.ndim != 3 or len(set(grid.shape)) != 1 or grid.shape[0] < 2:
        raise ShapeError(f"extract_mesh: sdf_grid must have shape (R, R, R) with R >= 2, got {grid.shape}")
    if grid.dtype.kind not in "fiu":
        raise DataError(f"extract_mesh: sdf_grid must be real numbers, got dtype {grid.dtype}")
    if not np.isfinite(grid).all():
        raise DataError("extract_mesh: sdf_grid contains NaN or infinite values")
    bound = check_positive(bound, "bound", "extract_mesh")
    if not is_real(level) or not math.isfinite(float(level)):
        raise DataError(f"extract_mesh: level must be a finite number, got {level!r}")
    empty = np.zeros((0, 3), dtype=np.float64), np.zeros((0, 3), dtype=np.int64)
    if not grid.min() < level < grid.max():
        return empty
    v, f = mcubes.marching_cubes(np.ascontiguousarray(grid, dtype=np.float64), float(level))
    if len(f) == 0:
        return empty
    spacing = 2.0 * bound / (grid.shape[0] - 1)
    # mcubes orients normals towards smaller values (inward for an SDF); reversing the winding flips them outward.
    return -bound + np.asarray(v, dtype=np.float64) * spacing, np.asarray(f, dtype=np.int64)[:, ::-1].copy()


# ----------------------------------------------------------------------------- ray casting


class RayHits(NamedTuple):
    """What :func:`cast_rays` found for N rays, K of which hit the mesh.

    ``hit`` (N,) bool; for the hitting rays, in ray order: ``face_ids`` (K,) int64 of the nearest hit
    face, ``barycentric`` (K, 3) float64 of the hit point on it, ``t`` (K,) float64 ray parameter of the
    hit (``origin + t direction``; the distance for unit directions) and ``normals`` (K, 3) the hit
    face's unit winding normal, not turned toward the ray (0 for a zero-area face).
    """

    hit: np.ndarray
    face_ids: np.ndarray
    barycentric: np.ndarray
    t: np.ndarray
    normals: np.ndarray


def cast_rays(v: Any, f: Any, origins: Any, directions: Any, *, where: str = "cast_rays") -> RayHits:
    """Exact nearest intersections of rays ``origins`` (N, 3) + t ``directions`` (N, 3), t > 0, with a
    triangle mesh, vertices (V, 3) and faces (F, 3) (any winding; no faces: nothing is hit).

    All rays go to one intersector call: building its BVH dominates the cost of small images.
    """
    import point_cloud_utils as pcu

    vertices, faces = check_mesh(v, f, where)
    o, d = check_vertices(origins, where, "origins"), check_vertices(directions, where, "directions")
    if o.shape != d.shape:
        raise ShapeError(f"{where}: origins {o.shape} and directions {d.shape} must have the same shape")
    if len(faces) == 0 or len(o) == 0:
        empty = np.zeros((0, 3))
        return RayHits(np.zeros(len(o), dtype=bool), np.zeros(0, dtype=np.int64), empty, np.zeros(0), empty)
    face_ids, bary, ray_t = pcu.ray_mesh_intersection(vertices, faces.astype(np.int32), o, d)
    face_ids = np.asarray(face_ids).astype(np.int64)
    hit = face_ids >= 0  # pcu marks a miss with face id -1 (and t = inf)
    face_ids = face_ids[hit]
    corners = vertices[faces[face_ids]]
    cross = _face_cross(corners)
    o, d = o[hit], d[hit]
    along = np.sum(cross * d, axis=1)
    # The intersector works in float32; intersecting the hit face's plane again in float64 makes depths exact
    # (ground-truth depth maps). Degenerate or grazing hits keep the intersector's distance.
    t = np.asarray(ray_t, dtype=np.float64)[hit]
    exact = np.abs(along) > 1e-300
    t[exact] = np.sum(cross[exact] * (corners[exact, 0] - o[exact]), axis=1) / along[exact]
    lengths = np.linalg.norm(cross, axis=1, keepdims=True)
    normals = np.divide(cross, lengths, out=np.zeros_like(cross), where=lengths > 0)
    return RayHits(hit, face_ids, np.asarray(bary, dtype=np.float64)[hit], t, normals)
