"""Triangle meshes and mesh sequences on disk.

* ``.ply`` / ``.obj``: one mesh (:func:`read_mesh`, :func:`write_mesh`); a folder of them, one per frame in
  natural order (``frame_2`` before ``frame_10``), is a sequence (:func:`read_mesh_folder`);
* a DeformingThings4D ``.anime`` file (little-endian) is a shared-topology sequence::

      int32 n_frames, int32 n_vertices, int32 n_faces
      float32 vertices (n_vertices, 3)            frame 0
      int32   faces    (n_faces, 3)
      float32 offsets  (n_frames - 1, n_vertices, 3)   frame i > 0 = frame 0 + offsets[i - 1]

A file that is missing, unreadable or corrupt is a DataError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.geometry import check_mesh
from resfields.tasks.common.media import replacing
from resfields.tasks.common.sequence import MeshSequence

__all__ = ["MESH_SUFFIXES", "read_anime", "read_mesh", "read_mesh_folder", "write_anime", "write_mesh"]

MESH_SUFFIXES = (".ply", ".obj")

_ANIME_HEADER = np.dtype("<i4")
_ANIME_FLOAT = np.dtype("<f4")
_ANIME_INT = np.dtype("<i4")


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
        return check_mesh(v, f, str(path), need_faces=True)
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

    path = Path(path)
    suffix = _suffix(path, MESH_SUFFIXES, "mesh")
    vertices, faces = check_mesh(v, f, f"write_mesh {path}", need_faces=True)
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
