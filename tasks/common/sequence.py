"""Deforming triangle-mesh sequences: the data of the temporal-SDF, scene-flow and dynamic-NeRF tasks.

A :class:`MeshSequence` holds one triangle mesh per frame. When every frame has the same faces
(``shared_topology``) vertex ``i`` is the same material point in every frame, so a surface point
given by (face id, barycentric coordinates) can be followed exactly through time; that is how the
scene-flow ground truth is made.

Frame ``f`` of ``T`` sits at normalised time ``t = -1 + 2 f / (T - 1)`` (:func:`resfields.spec.frame_to_time`).
Files are read and written by :mod:`resfields.tasks.common.meshio`, the embedded default is
:mod:`resfields.tasks.common.bunny` and :func:`resfields.tasks.common.sources.load_sequence` picks between them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from resfields.errors import DataError, FrameError
from resfields.tasks.common.geometry import check_faces, check_vertices
from resfields.tasks.common.values import check_positive, frozen, is_int

__all__ = ["MeshSequence", "check_subsample", "normalise_sequence", "subsample_sequence"]


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
        vertices = tuple(frozen(check_vertices(v, f"{where} frame {i}")) for i, v in enumerate(raw_v))
        # Shared-topology sequences usually pass one faces object for every frame; convert it once.
        converted: dict[tuple[int, int], np.ndarray] = {}
        faces = []
        for i, f in enumerate(raw_f):
            key = (id(f), len(vertices[i]))
            if key not in converted:
                converted[key] = frozen(check_faces(f, len(vertices[i]), f"{where} frame {i}"))
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
        if not is_int(i) or not 0 <= i < self.n_frames:
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


def check_subsample(n_frames: object, frame_stride: object, where: str) -> None:
    """FrameError, starting with ``where``, unless ``n_frames`` is None or a positive integer and
    ``frame_stride`` a positive integer."""
    if n_frames is not None and (not is_int(n_frames) or n_frames < 1):
        raise FrameError(f"{where}: n_frames must be a positive integer or None, got {n_frames!r}")
    if not is_int(frame_stride) or frame_stride < 1:
        raise FrameError(f"{where}: frame_stride must be a positive integer, got {frame_stride!r}")


def subsample_sequence(seq: MeshSequence, *, n_frames: int | None = None, frame_stride: int = 1) -> MeshSequence:
    """Every ``frame_stride``-th frame of ``seq``, then the first ``n_frames`` of those (all when None).

    FrameError when the stride is not a positive integer or fewer than ``n_frames`` frames remain.
    """
    check_subsample(n_frames, frame_stride, "subsample_sequence")
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
    extent = check_positive(extent, "extent", "normalise_sequence")
    lo, hi = seq.bounds()
    center = (lo + hi) / 2.0
    half = float(np.max(hi - lo)) / 2.0
    if half <= 0.0:
        raise DataError("normalise_sequence: all vertices coincide; the sequence cannot be scaled")
    scale = extent / half
    vertices = tuple((v - center) * scale for v in seq.vertices)
    return MeshSequence(vertices, seq.faces, name=seq.name), center, scale
