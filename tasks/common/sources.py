"""Where the mesh tasks' sequences come from: a folder of meshes, a ``.anime`` file, one mesh file, or,
by default, the embedded deforming bunny."""

from __future__ import annotations

from pathlib import Path

from resfields.errors import DataError
from resfields.tasks.common.bunny import deforming_bunny
from resfields.tasks.common.meshio import MESH_SUFFIXES, read_anime, read_mesh, read_mesh_folder
from resfields.tasks.common.sequence import MeshSequence, check_subsample, subsample_sequence

__all__ = ["load_sequence"]


def load_sequence(source: str | Path | None, *, n_frames: int | None = None, frame_stride: int = 1) -> MeshSequence:
    """A mesh sequence from ``source``, optionally subsampled in time (every ``frame_stride``-th, first ``n_frames``).

    ``None`` gives the deforming bunny: 16 frames, or with ``n_frames`` given exactly that many frames
    spanning the whole motion (it is generated densely enough for the stride). A folder is read with
    :func:`read_mesh_folder`, a ``.anime`` file with :func:`read_anime`, a single ``.ply`` / ``.obj`` as a
    one-frame sequence. DataError for a missing source or an unknown suffix.
    """
    check_subsample(n_frames, frame_stride, "load_sequence")
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
