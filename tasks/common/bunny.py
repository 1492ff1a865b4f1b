"""The embedded default mesh sequence: the Stanford bunny shipped with pymeshfix, repaired to a watertight
manifold and moved by the closed-form, volume-preserving motion :func:`deform`.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np

from resfields.errors import DataError, FrameError
from resfields.spec import frame_to_time
from resfields.tasks.common.geometry import check_mesh, check_vertices, is_watertight, signed_volume
from resfields.tasks.common.meshio import read_mesh
from resfields.tasks.common.sequence import MeshSequence
from resfields.tasks.common.values import frozen, is_int, is_real

__all__ = ["BUNNY_UP_AXIS", "bunny_path", "deform", "deforming_bunny", "load_bunny"]

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
    faces = np.asarray(fixer.faces, dtype=np.int64)
    vertices, faces = check_mesh(fixer.points, faces, f"bunny {path}", need_faces=True)
    if not is_watertight(faces):
        raise DataError(f"bunny: MeshFix did not make {path} watertight; check the installed pymeshfix version")
    if signed_volume(vertices, faces) < 0:  # keep normals outward whatever MeshFix chose
        faces = faces[:, ::-1].copy()
    return frozen(vertices), frozen(faces)


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
    v = check_vertices(vertices, "deform")
    if not is_real(t) or not math.isfinite(float(t)):
        raise FrameError(f"deform: t must be a finite number, got {t!r}")
    t = float(t)
    if box is None:
        if len(v) == 0:
            return v
        lo, hi = v.min(axis=0), v.max(axis=0)
    else:
        lo, hi = (check_vertices(np.reshape(b, (1, 3)), "deform box")[0] for b in box)
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

    Coordinates are the file's (z-up); use :func:`~resfields.tasks.common.sequence.normalise_sequence` to fit
    them into [-1, 1]^3.
    """
    if not is_int(n_frames) or n_frames < 1:
        raise FrameError(f"deforming_bunny: n_frames must be a positive integer, got {n_frames!r}")
    v, f = load_bunny()
    box = (v.min(axis=0), v.max(axis=0))
    frames = tuple(deform(v, frame_to_time(i, n_frames), box=box) for i in range(n_frames))
    return MeshSequence(frames, (f,) * n_frames, name="bunny")
