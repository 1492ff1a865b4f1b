"""``resfields conformance --checkpoint ID``: one checkpoint on every backend against the NumPy reference.

Field checkpoints (video, sdf, flow): the field at 2,048 fixed inputs spread over every frame (lookup)
or over [-1, 1] in time (interpolation), compared with the float64 reference under the conformance
suite's float32 field tolerance. NeRF checkpoints: a novel view rendered at a time between two frames
and at a frame, compared with the reference's render (RGB PSNR, opacity and depth error).
"""

from __future__ import annotations

import math
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from resfields.backends import BACKENDS
from resfields.conformance.compare import TOLERANCES, normalised_error
from resfields.spec import ModelSpec, frame_to_time
from resfields.tasks.nerf.model import LATENT_METHODS

from .pretrained import Pretrained, from_pretrained

__all__ = ["NERF_MIN_PSNR", "check_checkpoint"]

NERF_MIN_PSNR = 60.0  # dB between a backend's render and the reference's
NERF_MAX_OPACITY_ERROR = 1e-3


def _versions(backends: tuple[str, ...]) -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("resfields", *[b for b in backends if b != "numpy"]):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _field_inputs(spec: Any, n: int = 2048) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(n, spec.in_features)).astype(np.float32)
    rf = spec.resfield
    if rf is None:
        return x, {}
    if rf.mode == "lookup":
        return x, {"frame_ids": np.arange(n) % rf.capacity}
    return x, {"times": np.linspace(-1.0, 1.0, n).astype(np.float32)}


def _check_field(models: dict[str, Pretrained], reference: Pretrained) -> dict[str, dict[str, Any]]:
    spec = reference.checkpoint.spec
    x, keys = _field_inputs(spec)
    expected = reference.predict(x, **keys)
    tol = TOLERANCES[("float32", "field")]["forward"]
    out = {}
    for name, model in models.items():
        error = normalised_error(model.predict(x, **keys), expected)
        out[name] = {"forward_error": float(error), "passed": bool(error <= tol)}
    return out


def _check_nerf(models: dict[str, Pretrained], reference: Pretrained, size: int) -> dict[str, dict[str, Any]]:
    scene = reference.scene
    camera = scene.orbit(3, size)[1]
    n = scene.n_frames
    # between frames 0 and 1 (per-frame codes: frame 1 instead), and the last frame
    per_frame = reference.run.model.method in LATENT_METHODS
    between = frame_to_time(1, n) if per_frame or n == 1 else frame_to_time(0.5, n)
    times = [between, frame_to_time(n - 1, n)]
    expected = [scene.render(camera, time=t) for t in times]
    out = {}
    for name, model in models.items():
        got = [model.scene.render(camera, time=t) for t in times]
        mse = max(float(np.mean((g["rgb"] - e["rgb"]) ** 2)) for g, e in zip(got, expected, strict=True))
        psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        opacity = max(float(np.abs(g["opacity"] - e["opacity"]).max()) for g, e in zip(got, expected, strict=True))
        depth = max(_depth_error(g["depth"], e["depth"]) for g, e in zip(got, expected, strict=True))
        passed = psnr >= NERF_MIN_PSNR and opacity <= NERF_MAX_OPACITY_ERROR
        out[name] = {
            "rgb_psnr_db": psnr if math.isfinite(psnr) else "inf",
            "opacity_max_error": opacity,
            "depth_max_error": depth,
            "passed": bool(passed),
        }
    return out


def _depth_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest depth difference where both views see the surface (depth is NaN on the background;
    a pixel whose opacity straddles the threshold between backends is left out)."""
    both = np.isfinite(got) & np.isfinite(expected)
    return float(np.abs(got[both] - expected[both]).max()) if both.any() else 0.0


def check_checkpoint(
    id_or_path: str | Path,
    backends: tuple[str, ...] = BACKENDS,
    *,
    device: str | None = None,
    size: int = 32,
    revision: str | None = None,
) -> dict[str, Any]:
    """Compare ``backends`` with the float64 reference on one checkpoint; returns a JSON-ready report
    with ``passed``, per-backend errors, the tolerance, versions and a one-line ``summary``."""
    reference = from_pretrained(id_or_path, backend="numpy", revision=revision)
    models = {name: from_pretrained(reference.folder, backend=name, device=device) for name in backends}
    if isinstance(reference.checkpoint.spec, ModelSpec):
        results = _check_nerf(models, reference, size)
        tolerance = f"RGB PSNR >= {NERF_MIN_PSNR:g} dB and opacity error <= {NERF_MAX_OPACITY_ERROR:g} vs the reference"
        what = f"a {size}x{size} novel view at a time between frames and at the last frame"
    else:
        results = _check_field(models, reference)
        tol = TOLERANCES[("float32", "field")]["forward"]
        tolerance = f"max|backend - reference| / max(1, max|reference|) <= {tol:g}"
        what = "the field at 2048 fixed inputs over all frames/times"
    passed = all(r["passed"] for r in results.values())
    devices = device or "cpu"
    summary = f"{', '.join(backends)} on {devices} vs the NumPy float64 reference, {what}: " + (
        "all within tolerance"
        if passed
        else "FAILED for " + ", ".join(n for n, r in results.items() if not r["passed"])
    )
    return {
        "passed": passed,
        "tolerance": tolerance,
        "device": devices,
        "backends": results,
        "versions": _versions(backends),
        "summary": summary,
    }
