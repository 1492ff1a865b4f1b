"""The fields (Siren, PE-MLP) as plain forward passes with hand-written backward passes.

Shapes: ``x`` is ``(..., in_features)``; output ``(..., out_features)``; ``frame_ids``/``times``
broadcast against ``x.shape[:-1]`` and reach the ResField layers only.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from resfields.reference.layer import Params, resfield_linear, resfield_linear_vjp
from resfields.spec import FieldSpec, LinearSpec, MLPSpec, SirenSpec, layer_specs
from resfields.validate import check_encoding_window, check_time_arguments

Array = Any

__all__ = ["field_forward", "field_vjp", "positional_encoding", "softplus"]


def positional_encoding(x: Array, n_frequencies: int, include_input: bool, window: Array | None = None) -> Array:
    """``(..., D) -> (..., D (include_input + 2L))``: ``[x, w_0 sin(2^0 x), w_0 cos(2^0 x), ...]``.

    ``window`` ``(L,)`` weighs each frequency band (coarse-to-fine annealing); None means all ones.
    """
    xp = array_namespace(x)
    parts = [x] if include_input else []
    for k in range(n_frequencies):
        w = 1.0 if window is None else window[k]
        parts += [w * xp.sin(2.0**k * x), w * xp.cos(2.0**k * x)]
    return xp.concat(parts, axis=-1)


def _positional_encoding_vjp(
    x: Array, grad: Array, n_frequencies: int, include_input: bool, window: Array | None = None
) -> Array:
    xp = array_namespace(x)
    d = x.shape[-1]
    out = grad[..., :d] if include_input else xp.zeros_like(x)
    start = d if include_input else 0
    for k in range(n_frequencies):
        f = 2.0**k
        w = 1.0 if window is None else window[k]
        g_sin = grad[..., start + 2 * k * d : start + (2 * k + 1) * d]
        g_cos = grad[..., start + (2 * k + 1) * d : start + (2 * k + 2) * d]
        out = out + w * (f * xp.cos(f * x) * g_sin - f * xp.sin(f * x) * g_cos)
    return out


def softplus(z: Array, beta: float) -> Array:
    """``log(1 + exp(beta z)) / beta``, and ``z`` itself where ``beta z > 20`` (torch's threshold)."""
    xp = array_namespace(z)
    bz = beta * z
    return xp.where(bz > 20.0, z, xp.log1p(xp.exp(xp.minimum(bz, 20.0))) / beta)


def _activation(spec: FieldSpec, layer_index: int, z: Array) -> Array:
    xp = array_namespace(z)
    if isinstance(spec, SirenSpec):
        omega = spec.omega0 if layer_index == 0 else spec.hidden_omega0
        return xp.sin(omega * z)
    if spec.activation == "relu":
        return xp.where(z > 0, z, xp.zeros_like(z))
    return softplus(z, spec.softplus_beta)


def _activation_vjp(spec: FieldSpec, layer_index: int, z: Array, grad: Array) -> Array:
    xp = array_namespace(z)
    if isinstance(spec, SirenSpec):
        omega = spec.omega0 if layer_index == 0 else spec.hidden_omega0
        return grad * omega * xp.cos(omega * z)
    if spec.activation == "relu":
        return xp.where(z > 0, grad, xp.zeros_like(grad))
    bz = spec.softplus_beta * z
    sigmoid = 1.0 / (1.0 + xp.exp(-xp.minimum(bz, 20.0)))
    return xp.where(bz > 20.0, grad, grad * sigmoid)


def _layer_params(params: Params, i: int) -> dict[str, Array]:
    prefix = f"layers.{i}."
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def _time_kwargs(layer: LinearSpec, frame_ids: Array | None, times: Array | None) -> dict[str, Any]:
    return {} if layer.resfield is None else {"frame_ids": frame_ids, "times": times}


def _forward_trace(
    spec: FieldSpec, params: Params, x: Array, frame_ids: Array | None, times: Array | None, window: Array | None
):
    """Run the field, keeping every layer input and pre-activation for the backward pass."""
    xp = array_namespace(x)
    check_time_arguments(spec.resfield, frame_ids, times)
    check_encoding_window(spec, None if window is None else tuple(window.shape))
    layers = layer_specs(spec)
    encoded = x
    if isinstance(spec, MLPSpec):
        encoded = positional_encoding(x, spec.n_frequencies, spec.include_input, window)
    h, inputs, pre = encoded, [], []
    for i, layer in enumerate(layers):
        if isinstance(spec, MLPSpec) and i in spec.skips:
            h = xp.concat([h, encoded], axis=-1) / math.sqrt(2.0)
        inputs.append(h)
        z = resfield_linear(layer, _layer_params(params, i), h, **_time_kwargs(layer, frame_ids, times))
        pre.append(z)
        h = z if i == len(layers) - 1 else _activation(spec, i, z)
    return h, inputs, pre


def field_forward(
    spec: FieldSpec,
    params: Params,
    x: Array,
    frame_ids: Array | None = None,
    times: Array | None = None,
    encoding_window: Array | None = None,
) -> Array:
    """Evaluate a field (or a lone layer): ``(..., in_features) -> (..., out_features)``.

    ``encoding_window`` ``(n_frequencies,)`` weighs the positional-encoding bands of a PE-MLP
    (coarse-to-fine annealing, see :func:`resfields.encoding.coarse_to_fine_window`).
    """
    if isinstance(spec, LinearSpec):
        check_encoding_window(spec, None if encoding_window is None else tuple(encoding_window.shape))
        return resfield_linear(spec, params, x, **_time_kwargs(spec, frame_ids, times))
    return _forward_trace(spec, params, x, frame_ids, times, encoding_window)[0]


def field_vjp(
    spec: FieldSpec,
    params: Params,
    x: Array,
    grad_out: Array,
    frame_ids: Array | None = None,
    times: Array | None = None,
    encoding_window: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Gradients of ``sum(grad_out * field_forward(...))`` w.r.t. ``x`` and every parameter
    (canonical names of :func:`resfields.spec.parameter_shapes`); the window gets none (it is data)."""
    if isinstance(spec, LinearSpec):
        check_encoding_window(spec, None if encoding_window is None else tuple(encoding_window.shape))
        return resfield_linear_vjp(spec, params, x, grad_out, **_time_kwargs(spec, frame_ids, times))
    layers = layer_specs(spec)
    _, inputs, pre = _forward_trace(spec, params, x, frame_ids, times, encoding_window)
    grads: dict[str, Array] = {}
    g = grad_out
    grad_encoded = None
    for i in reversed(range(len(layers))):
        if i != len(layers) - 1:
            g = _activation_vjp(spec, i, pre[i], g)
        layer = layers[i]
        g, layer_grads = resfield_linear_vjp(
            layer, _layer_params(params, i), inputs[i], g, **_time_kwargs(layer, frame_ids, times)
        )
        grads.update({f"layers.{i}.{k}": v for k, v in layer_grads.items()})
        if isinstance(spec, MLPSpec) and i in spec.skips:
            width = g.shape[-1] - spec.encoded_features
            g_skip = g[..., width:] / math.sqrt(2.0)
            grad_encoded = g_skip if grad_encoded is None else grad_encoded + g_skip
            g = g[..., :width] / math.sqrt(2.0)
    if isinstance(spec, MLPSpec):
        g = g if grad_encoded is None else g + grad_encoded
        g = _positional_encoding_vjp(x, g, spec.n_frequencies, spec.include_input, encoding_window)
    return g, grads
