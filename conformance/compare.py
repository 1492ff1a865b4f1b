"""Run one case on a backend and on the NumPy float64 reference, and compare forward output and
gradients (w.r.t. the input and every parameter) under stated tolerances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resfields.encoding import coarse_to_fine_window
from resfields.init import random_parameters
from resfields.reference import field_forward, field_vjp
from resfields.spec import LinearSpec

from .cases import Case, make_inputs

__all__ = ["TOLERANCES", "Result", "compare_outputs", "normalised_error", "run_case", "tolerance"]

# max |backend - reference| / max(1, max |reference|), per compared tensor, by dtype and by whether
# the case is one layer or a whole field. Fields are looser because a Siren's sin(30 z) amplifies
# fp32 rounding by about omega per layer (seen here: layers <= 4e-7, fields <= 5e-4 over 4 seeds);
# a real bug shows up as errors of order 1e-1 and more.
TOLERANCES = {
    ("float32", "layer"): {"forward": 1e-5, "gradient": 5e-5},
    ("float32", "field"): {"forward": 1e-3, "gradient": 2e-3},
    ("bfloat16", "layer"): {"forward": 3e-2, "gradient": 6e-2},
    ("bfloat16", "field"): {"forward": 1e-1, "gradient": 2e-1},
}


@dataclass(frozen=True)
class Result:
    """Worst normalised errors of one case; ``worst_tensor`` names the gradient that was furthest off."""

    case: str
    backend: str
    device: str
    dtype: str
    forward_error: float
    gradient_error: float
    worst_tensor: str
    passed: bool
    message: str = ""


def normalised_error(value: np.ndarray, reference: np.ndarray) -> float:
    """``max|value - reference| / max(1, max|reference|)``; inf on shape mismatch or non-finite values."""
    value, reference = np.asarray(value, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if value.shape != reference.shape or not np.all(np.isfinite(value)):
        return float("inf")
    if value.size == 0:
        return 0.0
    return float(np.max(np.abs(value - reference)) / max(1.0, float(np.max(np.abs(reference)))))


def compare_outputs(
    forward: tuple[np.ndarray, np.ndarray],
    gradients: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]],
) -> tuple[float, float, str]:
    """(forward error, worst gradient error, name of the worst gradient) of a backend vs the reference."""
    y, y_ref = forward
    grad_x, grad_x_ref, grads, grads_ref = gradients
    errors = {"x": normalised_error(grad_x, grad_x_ref)}
    for name, ref in grads_ref.items():
        errors[name] = normalised_error(grads[name], ref) if name in grads else float("inf")
    worst = max(errors, key=errors.__getitem__)
    return normalised_error(y, y_ref), errors[worst], worst


def tolerance(case: Case) -> dict[str, float]:
    """The stated tolerance of a case (see :data:`TOLERANCES`)."""
    return TOLERANCES[(case.dtype, "layer" if isinstance(case.spec, LinearSpec) else "field")]


def run_case(backend, case: Case, device: str = "cpu") -> Result:
    """Evaluate ``case`` on ``backend`` (a :class:`resfields.backends.Backend`) and the reference."""
    params = random_parameters(case.spec, seed=case.seed)
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    x, kw, cotangent = make_inputs(case)
    # the reference sees exactly the fp32-rounded values the backend sees
    x = x.astype(np.float32).astype(np.float64)
    ref_params = {k: v.astype(np.float64) for k, v in params32.items()}
    times = kw["times"] if kw["times"] is None else np.asarray(kw["times"], dtype=np.float32).astype(np.float64)
    kw = {"frame_ids": kw["frame_ids"], "times": times}
    if case.encoding_alpha is not None:  # only then: a backend without encoding windows still runs the rest
        kw["encoding_window"] = coarse_to_fine_window(case.encoding_alpha, case.spec.n_frequencies)
    y_ref = field_forward(case.spec, ref_params, x, **kw)
    grad_x_ref, grads_ref = field_vjp(case.spec, ref_params, x, cotangent, **kw)
    try:
        model = backend.build(case.spec, params32, device=device)
        if case.strategy != "auto":  # only backends with several strategies (torch) take the keyword
            kw["strategy"] = case.strategy
        y, grad_x, grads = backend.value_and_grad(model, x, cotangent, dtype=case.dtype, **kw)
    except Exception as e:  # a crash is a failed case with its reason, not an aborted run
        return Result(
            case.name,
            backend.name,
            device,
            case.dtype,
            float("inf"),
            float("inf"),
            "-",
            False,
            f"{type(e).__name__}: {e}",
        )
    fwd, grad, worst = compare_outputs((y, y_ref), (grad_x, grad_x_ref, grads, grads_ref))
    tol = tolerance(case)
    passed = fwd <= tol["forward"] and grad <= tol["gradient"]
    return Result(case.name, backend.name, device, case.dtype, fwd, grad, worst, passed)
