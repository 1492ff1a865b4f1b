"""Deforming triangle-mesh sequences: the data of the temporal-SDF, scene-flow and dynamic-NeRF tasks.

A :class:`MeshSequence` holds one triangle mesh per frame. When every frame has the same faces
(``shared_topology``) vertex ``i`` is the same material point in every frame, so a surface point
given by (face id, barycentric coordinates) can be followed exactly through time; that is how the
scene-flow ground truth is made.

Sources
-------
* a folder of ``.ply`` / ``.obj`` files, one per frame, in natural order (``frame_2`` before ``frame_10``);
* a DeformingThings4D ``.anime`` file (little-endian)::

      int32 n_frames, int32 n_vertices, int32 n_faces
      float32 vertices (n_vertices, 3)            frame 0
      int32   faces    (n_faces, 3)
      float32 offsets  (n_frames - 1, n_vertices, 3)   frame i > 0 = frame 0 + offsets[i - 1]

* the embedded default: the Stanford bunny shipped with pymeshfix, repaired to a watertight manifold
  and moved by the closed-form, volume-preserving motion :func:`deform`.

Frame ``f`` of ``T`` sits at normalised time ``t = -1 + 2 f / (T - 1)`` (:func:`resfields.spec.frame_to_time`).

Geometry helpers implement the temporal-SDF sampling recipe of the paper (surface points, points
jittered near the surface, uniform points in the box) and marching cubes back to a mesh.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resfields.errors import DataError, FrameError, ShapeError
from resfields.spec import frame_to_time

__all__ = [
    "BUNNY_UP_AXIS",
    "MESH_SUFFIXES",
    "MeshSequence",
    "bunny_path",
    "deform",
    "deforming_bunny",
    "extract_mesh",
    "grid_points",
    "is_watertight",
    "load_bunny",
    "load_sequence",
    "normalise_sequence",
    "points_from_barycentric",
    "read_anime",
    "read_mesh",
    "read_mesh_folder",
    "sample_surface",
    "sdf_samples",
    "signed_distance",
    "signed_volume",
    "subsample_sequence",
    "write_anime",
    "write_mesh",
]

MESH_SUFFIXES = (".ply", ".obj")

# StanfordBunny.ply (pymeshfix) is z-up: z spans [0.1, 49.5] from the feet to the ear tips, x runs from
# the head (-x) to the tail (+x), y is the bunny's left-right. Units are millimetre-like, so the motion
# below is defined relative to the bounding box.
BUNNY_UP_AXIS = 2

# Amplitudes of the bunny motion (see deform), relative to the bounding box; with them every frame-to-frame
# step of deforming_bunny(16) moves the surface by about 2 % of the bunny's size.
_TWIST = 0.35  # radians of twist at the top of the box when |t| = 1
_SWAY = 0.12  # sideways shift of the top, in units of the largest half-extent
_WAVE = 0.03  # amplitude of the ripple travelling up the body, same unit
_WAVE_CYCLES = 1.5  # ripple wavelengths over the height of the box

_ANIME_HEADER = np.dtype("<i4")
_ANIME_FLOAT = np.dtype("<f4")
_ANIME_INT = np.dtype("<i4")


# ----------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _vertices(v: object, where: str, what: str = "vertices") -> np.ndarray:
    """(V, 3) float64 C-contiguous copy of ``v``; ShapeError for a wrong shape, DataError for
    non-numeric or non-finite values. ``what`` names the array in messages."""
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


def _faces(f: object, n_vertices: int, where: str) -> np.ndarray:
    """(F, 3) int64 copy of ``f``; DataError when an index is not an integer or not in ``[0, n_vertices)``."""
    arr = np.asarray(f)
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


def _points(p: object, where: str) -> np.ndarray:
    """(n, 3) float64 C-contiguous copy of query points; errors as for vertices."""
    return _vertices(p, where, "points")


def _mesh(v: object, f: object, where: str, *, need_faces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    vertices = _vertices(v, where)
    faces = _faces(f, len(vertices), where)
    if need_faces and len(faces) == 0:
        raise DataError(f"{where}: the mesh has no faces")
    return vertices, faces


def _count(value: object, name: str, where: str) -> int:
    if not _is_int(value) or value < 0:
        raise DataError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    return int(value)


def _positive(value: object, name: str, where: str) -> float:
    if not _is_real(value) or not (0.0 < float(value) < math.inf):  # also rejects NaN
        raise DataError(f"{where}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


# ----------------------------------------------------------------------------- data model


@dataclass(frozen=True, eq=False)  # eq=False: == on tuples of arrays is ambiguous, so compare by identity
class MeshSequence:
    """One triangle mesh per frame.

    ``vertices[t]`` is ``(V_t, 3)`` float64 and ``faces[t]`` is ``(F_t, 3)`` int64 indices into it.
    The arrays are validated, copied and made read-only on construction; lists (or a ``(T, V, 3)``
    array) are accepted and stored as tuples.
    """

    vertices: tuple[np.ndarray, ...]
    faces: tuple[np.ndarray, ...]
    name: str = ""

    def __post_init__(self) -> None:
        where = f"MeshSequence {self.name!r}" if self.name else "MeshSequence"
        if not isinstance(self.name, str):
            raise DataError(f"{where}: name must be a string, got {type(self.name).__name__}")
        try:
            raw_v, raw_f = tuple(self.vertices), tuple(self.faces)
        except TypeError as exc:
            raise DataError(f"{where}: vertices and faces must be sequences of per-frame arrays") from exc
        if len(raw_v) == 0:
            raise DataError(f"{where}: a sequence needs at least one frame")
        if len(raw_v) != len(raw_f):
            raise DataError(f"{where}: {len(raw_v)} vertex frames but {len(raw_f)} face frames")
        vertices = tuple(_read_only(_vertices(v, f"{where} frame {i}")) for i, v in enumerate(raw_v))
        # Shared-topology sequences usually pass one faces object for every frame; convert it once.
        converted: dict[tuple[int, int], np.ndarray] = {}
        faces = []
        for i, f in enumerate(raw_f):
            key = (id(f), len(vertices[i]))
            if key not in converted:
                converted[key] = _read_only(_faces(f, len(vertices[i]), f"{where} frame {i}"))
            faces.append(converted[key])
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", tuple(faces))

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return len(self.vertices)

    @functools.cached_property
    def shared_topology(self) -> bool:
        """True when every frame has the same vertex count and identical faces (vertex i corresponds over time)."""
        v0, f0 = self.vertices[0], self.faces[0]
        return all(
            len(v) == len(v0) and (f is f0 or np.array_equal(f, f0))
            for v, f in zip(self.vertices[1:], self.faces[1:], strict=True)
        )

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (V_i, 3) and faces (F_i, 3) of frame ``i`` in ``[0, n_frames)`` (no negative indexing)."""
        if not _is_int(i) or not 0 <= i < self.n_frames:
            raise FrameError(f"MeshSequence.frame: frame must be an integer in [0, {self.n_frames}), got {i!r}")
        return self.vertices[i], self.faces[i]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box over all frames: ``lo`` (3,) and ``hi`` (3,)."""
        non_empty = [v for v in self.vertices if len(v)]
        if not non_empty:
            raise DataError("MeshSequence.bounds: no frame has any vertex")
        lo = np.min([v.min(axis=0) for v in non_empty], axis=0)
        hi = np.max([v.max(axis=0) for v in non_empty], axis=0)
        return lo, hi


def _check_subsample(n_frames: object, frame_stride: object, where: str) -> None:
    if n_frames is not None and (not _is_int(n_frames) or n_frames < 1):
        raise FrameError(f"{where}: n_frames must be a positive integer or None, got {n_frames!r}")
    if not _is_int(frame_stride) or frame_stride < 1:
        raise FrameError(f"{where}: frame_stride must be a positive integer, got {frame_stride!r}")


def subsample_sequence(seq: MeshSequence, *, n_frames: int | None = None, frame_stride: int = 1) -> MeshSequence:
    """Every ``frame_stride``-th frame of ``seq``, then the first ``n_frames`` of those (all when None).

    FrameError when the stride is not a positive integer or fewer than ``n_frames`` frames remain.
    """
    _check_subsample(n_frames, frame_stride, "subsample_sequence")
    keep = list(range(0, seq.n_frames, frame_stride))
    if n_frames is not None:
        if n_frames > len(keep):
            raise FrameError(
                f"subsample_sequence: asked for {n_frames} frames but {seq.name or 'the sequence'} has only "
                f"{len(keep)} with frame_stride {frame_stride} ({seq.n_frames} in all)"
            )
        keep = keep[:n_frames]
    return MeshSequence(tuple(seq.vertices[i] for i in keep), tuple(seq.faces[i] for i in keep), name=seq.name)


def normalise_sequence(seq: MeshSequence, extent: float = 0.9) -> tuple[MeshSequence, np.ndarray, float]:
    """Move and scale all frames jointly into ``[-extent, extent]^3``.

    One similarity for the whole sequence (so motion is not distorted): ``v_norm = (v - center) * scale``
    with ``center`` (3,) the centre of the union bounding box and ``scale`` mapping its largest
    half-extent to ``extent``. Returns the normalised sequence, ``center`` and ``scale``.
    """
    extent = _positive(extent, "extent", "normalise_sequence")
    lo, hi = seq.bounds()
    center = (lo + hi) / 2.0
    half = float(np.max(hi - lo)) / 2.0
    if half <= 0.0:
        raise DataError("normalise_sequence: all vertices coincide; the sequence cannot be scaled")
    scale = extent / half
    vertices = tuple((v - center) * scale for v in seq.vertices)
    return MeshSequence(vertices, seq.faces, name=seq.name), center, scale


# ----------------------------------------------------------------------------- single meshes on disk


def _suffix(path: Path, allowed: Sequence[str], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise DataError(f"{path}: unknown {what} suffix {path.suffix!r}; expected one of {', '.join(allowed)}")
    return suffix


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh from ``.ply`` or ``.obj``: vertices (V, 3) float64, faces (F, 3) int64.

    Polygons are triangulated by point_cloud_utils. PLY keeps the stored precision; pcu parses OBJ
    coordinates as float32 (relative error ~6e-8).

    DataError (naming the path) when the file is missing, unreadable, corrupt or has no faces.
    """
    import point_cloud_utils as pcu

    path = Path(path)
    _suffix(path, MESH_SUFFIXES, "mesh")
    if not path.is_file():
        raise DataError(f"{path}: mesh file not found")
    try:
        v, f = pcu.load_mesh_vf(str(path), dtype=np.float64)
    except Exception as exc:  # pcu raises RuntimeError, AttributeError, ... on corrupt files
        raise DataError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})") from exc
    # pcu returns 1-D arrays for a single vertex or a single face, and None when faces are absent.
    v = np.zeros((0, 3)) if v is None else np.asarray(v).reshape(-1, 3)
    f = np.zeros((0, 3), dtype=np.int64) if f is None else np.asarray(f).reshape(-1, 3)
    try:
        return _mesh(v, f, str(path))
    except ShapeError as exc:
        raise DataError(str(exc)) from exc


def _write_obj(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    # pcu 0.34 fails to save OBJ ("Invalid dtype for argument 'v_colors'"), and OBJ is plain text anyway.
    with path.open("w", encoding="ascii") as out:
        np.savetxt(out, v, fmt="v %.17g %.17g %.17g")  # %.17g round-trips float64 exactly
        np.savetxt(out, f + 1, fmt="f %d %d %d")  # OBJ indices are 1-based


def write_mesh(path: str | Path, v: np.ndarray, f: np.ndarray) -> None:
    """Write vertices (V, 3) and faces (F, 3) to ``.ply`` (binary, float64) or ``.obj`` (text, exact float64).

    Atomic: the mesh is written to a temporary file in the same folder (with the same suffix, which
    point-cloud-utils picks the format from) and renamed over ``path``; a failed write leaves ``path``
    as it was and no temporary file behind."""
    import point_cloud_utils as pcu

    from resfields.tasks.common.media import replacing

    path = Path(path)
    suffix = _suffix(path, MESH_SUFFIXES, "mesh")
    vertices, faces = _mesh(v, f, f"write_mesh {path}")
    if not path.parent.is_dir():
        raise DataError(f"{path}: parent folder does not exist")
    try:
        with replacing(path) as tmp:
            if suffix == ".obj":
                _write_obj(tmp, vertices, faces)
            else:
                pcu.save_mesh_vf(str(tmp), vertices, faces.astype(np.int32), dtype=np.float64)
    except Exception as exc:
        raise DataError(f"{path}: cannot write mesh ({type(exc).__name__}: {exc})") from exc


def _natural_key(name: str) -> tuple[object, ...]:
    # re.split with a capture group alternates text and digits, so keys compare str to str and int to int.
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", name)))


def read_mesh_folder(folder: str | Path) -> MeshSequence:
    """Every ``.ply`` / ``.obj`` file of ``folder`` as one frame, in natural name order; name = folder name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: mesh folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES]
    if not files:
        raise DataError(f"{folder}: no {' or '.join(MESH_SUFFIXES)} files in the folder")
    files.sort(key=lambda p: (_natural_key(p.name), p.name))
    meshes = [read_mesh(p) for p in files]
    return MeshSequence(tuple(v for v, _ in meshes), tuple(f for _, f in meshes), name=folder.name)


# ----------------------------------------------------------------------------- DeformingThings4D .anime


def read_anime(path: str | Path) -> MeshSequence:
    """Read a DeformingThings4D ``.anime`` file (layout in the module docstring) as a shared-topology sequence.

    Frame ``i > 0`` is ``frame0 + offsets[i - 1]``, added in float64. DataError (naming the path) when
    the file is missing, its size differs from what the header implies, or the data are invalid.
    """
    path = Path(path)
    _suffix(path, (".anime",), "animation")
    if not path.is_file():
        raise DataError(f"{path}: .anime file not found")
    data = path.read_bytes()
    if len(data) < 3 * _ANIME_HEADER.itemsize:
        raise DataError(f"{path}: truncated .anime file ({len(data)} bytes, the header alone needs 12)")
    n_frames, n_vertices, n_faces = (int(x) for x in np.frombuffer(data, _ANIME_HEADER, count=3))
    if n_frames < 1 or n_vertices < 1 or n_faces < 0:
        raise DataError(
            f"{path}: corrupt .anime header (n_frames={n_frames}, n_vertices={n_vertices}, n_faces={n_faces})"
        )
    sizes = (3 * n_vertices * _ANIME_FLOAT.itemsize, 3 * n_faces * _ANIME_INT.itemsize)
    offsets_size = 3 * n_vertices * (n_frames - 1) * _ANIME_FLOAT.itemsize
    expected = 3 * _ANIME_HEADER.itemsize + sizes[0] + sizes[1] + offsets_size
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing data in"
        raise DataError(
            f"{path}: {problem} .anime file: {len(data)} bytes, but the header "
            f"(n_frames={n_frames}, n_vertices={n_vertices}, n_faces={n_faces}) implies {expected}"
        )
    at = 3 * _ANIME_HEADER.itemsize
    v0 = np.frombuffer(data, _ANIME_FLOAT, 3 * n_vertices, at).reshape(n_vertices, 3).astype(np.float64)
    at += sizes[0]
    faces = np.frombuffer(data, _ANIME_INT, 3 * n_faces, at).reshape(n_faces, 3)
    at += sizes[1]
    offsets = np.frombuffer(data, _ANIME_FLOAT, 3 * n_vertices * (n_frames - 1), at)
    offsets = offsets.reshape(n_frames - 1, n_vertices, 3).astype(np.float64)
    try:
        return MeshSequence((v0, *(v0 + o for o in offsets)), (faces,) * n_frames, name=path.stem)
    except (DataError, ShapeError) as exc:
        raise DataError(f"{path}: {exc}") from exc


def write_anime(path: str | Path, seq: MeshSequence) -> None:
    """Write a shared-topology ``seq`` as a DeformingThings4D ``.anime`` file (float32 vertices and offsets)."""
    path = Path(path)
    _suffix(path, (".anime",), "animation")
    if not seq.shared_topology:
        raise DataError(f"{path}: .anime needs a shared-topology sequence (same faces and vertex count in every frame)")
    if len(seq.vertices[0]) == 0:
        raise DataError(f"{path}: .anime needs at least one vertex")
    v0 = seq.vertices[0].astype(_ANIME_FLOAT)
    # Offsets from the stored float32 frame 0, so frame0 + offset is as close to the input as float32 allows.
    offsets = np.stack([v - v0.astype(np.float64) for v in seq.vertices[1:]]) if seq.n_frames > 1 else None
    header = np.array([seq.n_frames, len(v0), len(seq.faces[0])], dtype=_ANIME_HEADER)
    if not path.parent.is_dir():
        raise DataError(f"{path}: parent folder does not exist")
    parts = [header, v0, seq.faces[0].astype(_ANIME_INT)]
    if offsets is not None:
        parts.append(offsets.astype(_ANIME_FLOAT))
    try:
        path.write_bytes(b"".join(part.tobytes() for part in parts))
    except OSError as exc:
        raise DataError(f"{path}: cannot write .anime file ({exc})") from exc


# ----------------------------------------------------------------------------- the embedded bunny


def bunny_path() -> Path:
    """Path of ``StanfordBunny.ply`` (50k vertices, not watertight) shipped in the pymeshfix package."""
    spec = importlib.util.find_spec("pymeshfix")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "bunny: pymeshfix is not installed; install it with `pip install pymeshfix` "
            "(or `pip install resfields[tasks]`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "examples" / "StanfordBunny.ply"
    if not path.is_file():
        raise DataError(f"bunny: {path} not found; reinstall pymeshfix (`pip install --force-reinstall pymeshfix`)")
    return path


@functools.lru_cache(maxsize=1)
def load_bunny() -> tuple[np.ndarray, np.ndarray]:
    """The Stanford bunny repaired by MeshFix into a watertight, outward-oriented manifold.

    Returns read-only vertices (V, 3) float64 and faces (F, 3) int64 (about 51k vertices, 102k faces)
    in the file's z-up units. The repair takes ~2 s, so the result is cached.
    """
    import pymeshfix

    path = bunny_path()
    v, f = read_mesh(path)
    fixer = pymeshfix.MeshFix(v, f.astype(np.int32))
    fixer.repair()
    vertices, faces = _mesh(fixer.points, np.asarray(fixer.faces, dtype=np.int64), f"bunny {path}")
    if not is_watertight(faces):
        raise DataError(f"bunny: MeshFix did not make {path} watertight; check the installed pymeshfix version")
    if signed_volume(vertices, faces) < 0:  # keep normals outward whatever MeshFix chose
        faces = faces[:, ::-1].copy()
    return _read_only(vertices), _read_only(faces)


def deform(vertices: np.ndarray, t: float, *, box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Closed-form, smooth, volume-preserving non-rigid motion of z-up points at normalised time ``t``.

    With the box ``(lo, hi)`` (default: the bounding box of ``vertices``), ``c`` its centre, ``s`` its
    largest half-extent and ``h = (z - lo_z) / (hi_z - lo_z)`` the height fraction, each horizontal
    slice is moved rigidly, the more the higher it is (the feet, h = 0, stay put):

    * twist about the vertical axis through ``c`` by ``0.35 t h`` radians;
    * sway along x by ``0.12 s sin(pi t / 2) h^2``;
    * a ripple along y travelling up the body, ``0.03 s h (sin(2 pi (1.5 h - t/2)) - sin(2 pi 1.5 h))``.

    Every slice z = const moves by a rotation plus a translation and z is unchanged, so the map is
    a bijection of R^3 with Jacobian determinant 1: deformed surfaces never self-intersect and enclose
    the same volume at every t. ``deform(v, 0)`` is ``v``. Input (V, 3), output (V, 3) float64.
    """
    v = _vertices(vertices, "deform")
    if not _is_real(t) or not math.isfinite(float(t)):
        raise FrameError(f"deform: t must be a finite number, got {t!r}")
    t = float(t)
    if box is None:
        if len(v) == 0:
            return v
        lo, hi = v.min(axis=0), v.max(axis=0)
    else:
        lo, hi = (_vertices(np.reshape(b, (1, 3)), "deform box")[0] for b in box)
    up = BUNNY_UP_AXIS
    height = float(hi[up] - lo[up])
    half = float(np.max(hi - lo)) / 2.0
    if height <= 0.0:
        raise DataError("deform: the box has no height along z")
    center = (lo + hi) / 2.0
    h = (v[:, up] - lo[up]) / height
    x, y = v[:, 0] - center[0], v[:, 1] - center[1]
    angle = _TWIST * t * h
    cos, sin = np.cos(angle), np.sin(angle)
    phase = 2.0 * math.pi * _WAVE_CYCLES * h
    out = v.copy()
    out[:, 0] = center[0] + cos * x - sin * y + _SWAY * half * math.sin(math.pi * t / 2.0) * h**2
    out[:, 1] = center[1] + sin * x + cos * y + _WAVE * half * h * (np.sin(phase - math.pi * t) - np.sin(phase))
    return out


def deforming_bunny(n_frames: int = 16) -> MeshSequence:
    """The repaired bunny under :func:`deform`, frame f at ``t = frame_to_time(f, n_frames)``; shared topology.

    Coordinates are the file's (z-up); use :func:`normalise_sequence` to fit them into [-1, 1]^3.
    """
    if not _is_int(n_frames) or n_frames < 1:
        raise FrameError(f"deforming_bunny: n_frames must be a positive integer, got {n_frames!r}")
    v, f = load_bunny()
    box = (v.min(axis=0), v.max(axis=0))
    frames = tuple(deform(v, frame_to_time(i, n_frames), box=box) for i in range(n_frames))
    return MeshSequence(frames, (f,) * n_frames, name="bunny")


def load_sequence(source: str | Path | None, *, n_frames: int | None = None, frame_stride: int = 1) -> MeshSequence:
    """A mesh sequence from ``source``, optionally subsampled in time (every ``frame_stride``-th, first ``n_frames``).

    ``None`` gives the deforming bunny: 16 frames, or with ``n_frames`` given exactly that many frames
    spanning the whole motion (it is generated densely enough for the stride). A folder is read with
    :func:`read_mesh_folder`, a ``.anime`` file with :func:`read_anime`, a single ``.ply`` / ``.obj`` as a
    one-frame sequence. DataError for a missing source or an unknown suffix.
    """
    _check_subsample(n_frames, frame_stride, "load_sequence")
    if source is None:
        seq = deforming_bunny(16 if n_frames is None else (n_frames - 1) * frame_stride + 1)
        return subsample_sequence(seq, n_frames=n_frames, frame_stride=frame_stride)
    if not isinstance(source, str | Path):
        raise DataError(f"load_sequence: source must be a path or None, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        seq = read_mesh_folder(path)
    elif path.suffix.lower() == ".anime":
        seq = read_anime(path)
    elif path.suffix.lower() in MESH_SUFFIXES:
        v, f = read_mesh(path)
        seq = MeshSequence((v,), (f,), name=path.stem)
    elif not path.exists():
        raise DataError(f"{path}: mesh sequence source not found")
    else:
        raise DataError(f"{path}: unknown mesh sequence source; expected a folder, a .anime, .ply or .obj file")
    return subsample_sequence(seq, n_frames=n_frames, frame_stride=frame_stride)


# ----------------------------------------------------------------------------- geometry


def is_watertight(faces: np.ndarray) -> bool:
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


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    """Signed volume enclosed by a closed mesh, vertices (V, 3), faces (F, 3); positive for outward normals."""
    vertices, faces = _mesh(v, f, "signed_volume")
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    # Relative to the centroid: the sum is origin-independent for closed meshes but loses fewer digits.
    centroid = vertices.mean(axis=0)
    a, b, c = a - centroid, b - centroid, c - centroid
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def sample_surface(
    v: np.ndarray, f: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points uniformly distributed over the surface area of vertices (V, 3), faces (F, 3).

    Returns points (n, 3) float64, face_ids (n,) int64 and barycentric (n, 3) float64 (rows sum to 1),
    with ``points == points_from_barycentric(v, f, face_ids, barycentric)``.
    """
    vertices, faces = _mesh(v, f, "sample_surface")
    n = _count(n, "n", "sample_surface")
    tri = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cdf = np.cumsum(areas)
    if not cdf[-1] > 0.0:
        raise DataError("sample_surface: the mesh has zero surface area")
    # side="right" skips zero-area faces: the first face whose cumulative area exceeds the draw is picked.
    face_ids = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    face_ids = np.minimum(face_ids, len(faces) - 1).astype(np.int64)
    # sqrt warps the unit square onto the triangle with uniform density.
    r1, r2 = rng.random(n), rng.random(n)
    root = np.sqrt(r1)
    barycentric = np.stack([1.0 - root, root * (1.0 - r2), root * r2], axis=1)
    points = np.einsum("nk,nkd->nd", barycentric, tri[face_ids])
    return points, face_ids, barycentric


def points_from_barycentric(v: np.ndarray, f: np.ndarray, face_ids: np.ndarray, barycentric: np.ndarray) -> np.ndarray:
    """Surface points (n, 3) at faces ``face_ids`` (n,) with weights ``barycentric`` (n, 3) on vertices (V, 3).

    With the faces of another frame of a shared-topology sequence this follows the same material
    points through time, which makes scene-flow targets exact.
    """
    vertices, faces = _mesh(v, f, "points_from_barycentric")
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


def signed_distance(v: np.ndarray, f: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact signed distance (n,) from ``points`` (n, 3) to a closed mesh (V, 3), (F, 3): positive outside.

    The magnitude is the exact point-to-triangle distance (``pcu.closest_points_on_mesh``); the
    sign comes from the fast generalised winding number, so it does not depend on face orientation.
    DataError when the mesh is not watertight (inside would be undefined).
    """
    import point_cloud_utils as pcu

    vertices, faces = _mesh(v, f, "signed_distance")
    query = _points(points, "signed_distance")
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
    v: np.ndarray,
    f: np.ndarray,
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
    vertices, faces = _mesh(v, f, where)
    counts = [
        _count(n, name, where) for n, name in ((n_surface, "n_surface"), (n_near, "n_near"), (n_uniform, "n_uniform"))
    ]
    sigma = _positive(sigma, "sigma", where)
    bound = _positive(bound, "bound", where)
    surface, _, _ = sample_surface(vertices, faces, counts[0] + counts[1], rng)
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
    if not _is_int(resolution) or resolution < 2:
        raise ShapeError(f"grid_points: resolution must be an integer >= 2, got {resolution!r}")
    bound = _positive(bound, "bound", "grid_points")
    axis = np.linspace(-bound, bound, int(resolution))
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float32)


def extract_mesh(sdf_grid: np.ndarray, bound: float = 1.0, level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
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
    bound = _positive(bound, "bound", "extract_mesh")
    if not _is_real(level) or not math.isfinite(float(level)):
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
