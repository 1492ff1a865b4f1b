"""Draw parameters in NumPy from the spec's init rules (:func:`resfields.spec.init_rules`).

Backends draw from the same rules with their own random generators; this sampler serves the
reference, the conformance suite and tests.
"""

from __future__ import annotations

import numpy as np

from resfields.spec import FieldSpec, Init, init_rules, parameter_shapes

__all__ = ["draw", "random_parameters", "sample_parameters"]


def draw(rule: Init, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One float64 array of ``shape`` drawn from ``rule``."""
    if rule.kind == "uniform":
        value = rng.uniform(rule.a, rule.b, size=shape)
    elif rule.kind == "normal":
        value = rng.normal(rule.a, rule.b, size=shape)
    else:
        value = np.full(shape, rule.a, dtype=np.float64)
    for start, stop in rule.zero_columns:
        value[:, start:stop] = 0.0
    return value


def sample_parameters(spec: FieldSpec, seed: int = 0, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Freshly initialised parameters ``{canonical name: array}`` for ``spec``."""
    rng = np.random.default_rng(seed)
    rules = init_rules(spec)
    return {name: draw(rules[name], shape, rng).astype(dtype) for name, shape in parameter_shapes(spec).items()}


def random_parameters(spec: FieldSpec, seed: int = 0, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Parameters where *every* tensor is random and non-zero (float64), for testing gradients:
    the init rules zero the residuals, which would hide bugs in their paths."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in parameter_shapes(spec).items():
        fan_in = shape[-1] if len(shape) > 1 else 1
        out[name] = rng.normal(0.0, scale / np.sqrt(fan_in), size=shape)
    return out
