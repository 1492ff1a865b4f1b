"""Convert upstream ResFields state dicts (github.com/markomih/ResFields) to canonical parameters.

Upstream's ``ResFieldLinear`` keeps ``weight`` (O, I) and ``bias`` (O,) like ``torch.nn.Linear``
plus, per compression, the residual factors below. ``dW[c]`` is the residual of time coefficient
``c`` (shape (O, I)); the canonical names are those of :func:`resfields.spec.parameter_shapes`
(see :func:`resfields.reference.layer.residual_basis` for their meaning)::

    vm      weights_t (C, R), matrix_t (R, O*I)        dW[c] = sum_r weights_t[c, r] matrix_t[r].reshape(O, I)
            -> coefficients = weights_t, matrices = matrix_t.reshape(R, O, I)
    none    matrix_t (C, O*I) [weights_t (C, C)]      dW[c] = matrix_t[c].reshape(O, I)
            -> residuals = matrix_t.reshape(C, O, I)   (weights_t @ matrix_t if weights_t is present)
    cp      lin_w (R,), lin_f1 (C, R), lin_f2 (O, R), lin_f3 (I, R)
            dW[c, o, i] = sum_r w_r f1[c, r] f2[o, r] f3[i, r]
            -> coefficients = f1 * w, out_factors = f2.T, in_factors = f3.T
    tucker  core (R, R, R), factors.0 (C, R), factors.1 (O, R), factors.2 (I, R)
            dW[c, o, i] = sum_abd core[a, b, d] F0[c, a] F1[o, b] F2[i, d]
            -> coefficients = F0, core = core, out_factors = F1.T, in_factors = F2.T

The conversion is exact (a reshape, a transpose and, for cp, folding ``w`` into the coefficients).
No torch import is needed: torch tensors are read through ``.detach().cpu().numpy()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from resfields.errors import CheckpointError
from resfields.spec import FieldSpec, LinearSpec, layer_specs, parameter_shapes

__all__ = ["convert_upstream_state_dict", "detect_upstream_layers"]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _normalise_prefix(prefix: str) -> str:
    return prefix if prefix == "" or prefix.endswith(".") else prefix + "."


def detect_upstream_layers(state: Mapping[str, Any]) -> list[str]:
    """Upstream layer prefixes (``"net.0.linear."``, or ``""`` for a lone layer), in key order.

    A layer is any key named ``weight`` or ending in ``.weight`` whose value is 2-D.
    """
    prefixes = []
    for key, value in state.items():
        if (key == "weight" or key.endswith(".weight")) and np.ndim(_to_numpy(value)) == 2:
            prefixes.append(key[: -len("weight")])
    return prefixes


def _take(state: Mapping[str, np.ndarray], used: set[str], key: str, layer: int) -> np.ndarray:
    if key not in state:
        raise CheckpointError(f"upstream state dict: layer {layer} needs {key!r}, which is missing")
    used.add(key)
    return state[key]


def _check_shape(value: np.ndarray, shape: tuple[int, ...], key: str, layer: int) -> None:
    if tuple(value.shape) != shape:
        raise CheckpointError(
            f"upstream state dict: {key!r} (layer {layer}) has shape {tuple(value.shape)}, expected {shape}"
        )


def _convert_layer(
    spec: LinearSpec, state: Mapping[str, np.ndarray], prefix: str, index: int, used: set[str]
) -> dict[str, np.ndarray]:
    o, i = spec.out_features, spec.in_features
    out = {"weight": _take(state, used, prefix + "weight", index)}
    if spec.bias:
        out["bias"] = _take(state, used, prefix + "bias", index)
    rf = spec.resfield
    if rf is None:
        return out
    c = rf.capacity

    def take(name: str) -> np.ndarray:
        return _take(state, used, prefix + name, index)

    if rf.compression == "none":
        matrix = take("matrix_t")
        if prefix + "weights_t" in state:
            weights = take("weights_t")
            _check_shape(weights, (c, matrix.shape[0]), prefix + "weights_t", index)
            matrix = weights @ matrix
        _check_shape(matrix, (c, o * i), prefix + "matrix_t", index)
        out["residuals"] = matrix.reshape(c, o, i)
        return out
    r = int(rf.rank)  # type: ignore[arg-type]
    if rf.compression == "vm":
        weights, matrix = take("weights_t"), take("matrix_t")
        _check_shape(weights, (c, r), prefix + "weights_t", index)
        _check_shape(matrix, (r, o * i), prefix + "matrix_t", index)
        out["coefficients"] = weights
        out["matrices"] = matrix.reshape(r, o, i)
    elif rf.compression == "cp":
        w, f1, f2, f3 = take("lin_w"), take("lin_f1"), take("lin_f2"), take("lin_f3")
        for value, shape, name in (
            (w, (r,), "lin_w"),
            (f1, (c, r), "lin_f1"),
            (f2, (o, r), "lin_f2"),
            (f3, (i, r), "lin_f3"),
        ):
            _check_shape(value, shape, prefix + name, index)
        out["coefficients"] = f1 * w[None, :]
        out["out_factors"] = f2.T
        out["in_factors"] = f3.T
    else:  # tucker
        core, f0, f1, f2 = take("core"), take("factors.0"), take("factors.1"), take("factors.2")
        for value, shape, name in (
            (core, (r, r, r), "core"),
            (f0, (c, r), "factors.0"),
            (f1, (o, r), "factors.1"),
            (f2, (i, r), "factors.2"),
        ):
            _check_shape(value, shape, prefix + name, index)
        out["coefficients"] = f0
        out["core"] = core
        out["out_factors"] = f1.T
        out["in_factors"] = f2.T
    return out


def convert_upstream_state_dict(
    state: Mapping[str, Any],
    spec: FieldSpec,
    layer_names: Sequence[str] | None = None,
    *,
    strict: bool = True,
    dtype: Any = np.float32,
) -> dict[str, np.ndarray]:
    """Map an upstream ResFields ``state_dict`` to canonical parameters of ``spec``.

    Args:
        state: ``{upstream key: tensor or array}`` (torch tensors or NumPy arrays).
        spec: the field spec the parameters are for; its ResField layers say which compression
            each layer uses (``resfield_layers`` / ``resfield``).
        layer_names: upstream prefix of canonical layer ``i`` (e.g. ``["net.0.linear", ...]``,
            with or without the trailing dot; ``""`` for a bare layer). Default: every key
            ``*weight`` with a 2-D value, in order of appearance (:func:`detect_upstream_layers`).
        strict: if True, upstream keys not consumed by any layer are an error.
        dtype: dtype of the returned arrays (float32 by default).

    Returns:
        ``{canonical name: array}`` with exactly the names and shapes of
        :func:`resfields.spec.parameter_shapes` (``layers.{i}.*``, bare names for a LinearSpec),
        e.g. ``matrices`` ``(R, O, I)``, ``coefficients`` ``(C, R)``, ``residuals`` ``(C, O, I)``.

    Raises:
        CheckpointError: wrong number of layers, a missing or misshaped upstream tensor,
            non-float values, or (``strict``) unused upstream keys.
    """
    arrays = {str(k): _to_numpy(v) for k, v in state.items()}
    layers = layer_specs(spec)
    prefixes = detect_upstream_layers(arrays) if layer_names is None else [_normalise_prefix(p) for p in layer_names]
    if len(prefixes) != len(layers):
        how = "given" if layer_names is not None else "detected (2-D '*weight' keys)"
        raise CheckpointError(
            f"upstream state dict: {len(prefixes)} layer(s) {how} {prefixes}, but the spec has {len(layers)}; "
            "pass layer_names to map canonical layers to upstream prefixes"
        )
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}
    bare = isinstance(spec, LinearSpec)
    for index, (layer, prefix) in enumerate(zip(layers, prefixes, strict=True)):
        for name, value in _convert_layer(layer, arrays, prefix, index, used).items():
            out[name if bare else f"layers.{index}.{name}"] = value
    if strict:
        unused = sorted(set(arrays) - used)
        if unused:
            raise CheckpointError(
                f"upstream state dict: key(s) {unused} were not used by any layer of the spec "
                "(wrong compression or layer_names? pass strict=False to ignore them)"
            )
    expected = parameter_shapes(spec)
    result: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        value = out[name]
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(f"upstream state dict: {name!r} has non-float dtype {value.dtype}")
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"upstream state dict: {name!r} has shape {tuple(value.shape)}, expected {shape}")
        result[name] = np.ascontiguousarray(value, dtype=dtype)
    return result
