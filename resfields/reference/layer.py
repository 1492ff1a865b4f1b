"""The ResField linear layer, equation by equation, with its hand-derived backward pass.

Written against the Python array API standard (``array_api_compat.array_namespace``), so it runs on
NumPy float64 (the oracle), array-api-strict, torch, CuPy or JAX arrays alike. It deliberately
builds one weight matrix per sample: slow, and obviously right.

Shapes: ``x`` is ``(..., I)``; ``frame_ids`` / ``times`` broadcast against ``x.shape[:-1]``;
parameters follow :func:`resfields.spec.parameter_shapes` (bare names for one layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from array_api_compat import array_namespace

from resfields.spec import LinearSpec, ResFieldSpec, knot_tolerance
from resfields.validate import (
    broadcast_time_shape,
    check_frame_range,
    check_input_features,
    check_time_arguments,
    check_times,
)

Array = Any
Params = Mapping[str, Array]

__all__ = ["per_sample_weights", "resfield_linear", "resfield_linear_vjp", "residual_basis", "time_matrix"]


def time_matrix(rf: ResFieldSpec, key: Array, xp: Any) -> Array:
    """Matrix ``A`` of shape ``(N, C)`` with ``c(t_n) = sum_k A[n, k] c_k``.

    ``key`` is ``(N,)``: integer frame ids (lookup: A is one-hot) or times (interpolation: at most two
    non-zeros per row, ``1 - w`` at ``floor(p)`` and ``w`` at the next knot,
    ``p = (clip(t, -1, 1) + 1) / 2 (C - 1)``, which lies in ``[0, C - 1]``).
    """
    knots = xp.arange(rf.capacity)[None, :]
    if rf.mode == "lookup":
        return xp.astype(xp.astype(key, xp.int64)[:, None] == knots, xp.float64)
    # clamping the time, not the position: inf * (C - 1) is NaN when C == 1, and huge times overflow
    position = (xp.clip(xp.astype(key, xp.float64), -1.0, 1.0) + 1.0) / 2.0 * (rf.capacity - 1)
    # within the key's own rounding of a knot is on the knot (the spec's time convention)
    eps = float(xp.finfo(key.dtype).eps) if xp.isdtype(key.dtype, "real floating") else 0.0
    knot = xp.round(position)
    position = xp.where(xp.abs(knot - position) <= knot_tolerance(eps, rf.capacity), knot, position)
    low = xp.floor(position)
    w = (position - low)[:, None]
    high = xp.clip(low + 1.0, 0.0, float(rf.capacity - 1))
    knots = xp.astype(knots, xp.float64)
    return (1.0 - w) * xp.astype(low[:, None] == knots, xp.float64) + w * xp.astype(high[:, None] == knots, xp.float64)


def residual_basis(rf: ResFieldSpec, params: Params, xp: Any) -> Array:
    """The ``R`` residual matrices ``M`` of shape ``(R, O, I)`` with ``dW(t) = sum_r c_r(t) M_r``.

    vm stores M; cp builds ``M_r = u_r v_r^T``; tucker builds ``M_a = sum_bd G_abd u_b v_d^T``.
    (Not defined for compression "none", whose residuals are per frame.)
    """
    if rf.compression == "vm":
        return params["matrices"]
    u, v = params["out_factors"], params["in_factors"]  # (R, O), (R, I)
    if rf.compression == "cp":
        return u[:, :, None] * v[:, None, :]
    core = params["core"]  # (R, R, R)
    # M[a, o, i] = sum_b sum_d core[a, b, d] u[b, o] v[d, i]
    core_u = xp.tensordot(core, u, axes=([1], [0]))  # (a, d, o)
    return xp.tensordot(core_u, v, axes=([1], [0]))  # (a, o, i)


def _flatten_inputs(spec: LinearSpec, x: Array, frame_ids: Array | None, times: Array | None, xp: Any):
    check_input_features(tuple(x.shape), spec.in_features)
    which = check_time_arguments(spec.resfield, frame_ids, times)
    lead = tuple(x.shape[:-1])
    x2 = xp.reshape(x, (-1, spec.in_features))
    if which is None:
        return x2, None, lead
    rf = spec.resfield
    key = xp.asarray(frame_ids if which == "frame_ids" else times)
    broadcast_time_shape(tuple(key.shape), lead, which)
    key = xp.reshape(xp.broadcast_to(key, lead), (-1,))
    if which == "frame_ids":
        integer = xp.isdtype(key.dtype, "integral")
        empty = key.shape[0] == 0
        low = None if empty or not integer else int(xp.min(key))
        high = None if empty or not integer else int(xp.max(key))
        check_frame_range(integer, low, high, rf.capacity)
    else:
        floating = xp.isdtype(key.dtype, "real floating")
        check_times(floating, floating and bool(xp.any(xp.isnan(key))))
    return x2, time_matrix(rf, key, xp), lead


def per_sample_weights(spec: LinearSpec, params: Params, a: Array, xp: Any) -> Array:
    """``W + dW(t_n)`` for every sample: ``(N, O, I)`` from the time matrix ``a`` ``(N, C)``."""
    rf = spec.resfield
    weight = params["weight"]
    n, o, i = a.shape[0], spec.out_features, spec.in_features
    if rf.compression == "none":
        delta = a @ xp.reshape(params["residuals"], (rf.capacity, o * i))
    else:
        c = a @ params["coefficients"]  # (N, R)
        delta = c @ xp.reshape(residual_basis(rf, params, xp), (rf.rank, o * i))
    return weight[None, :, :] + xp.reshape(delta, (n, o, i))


def resfield_linear(
    spec: LinearSpec, params: Params, x: Array, frame_ids: Array | None = None, times: Array | None = None
) -> Array:
    """``y_n = W(t_n) x_n + b``: ``(..., I) -> (..., O)``."""
    xp = array_namespace(x)
    x2, a, lead = _flatten_inputs(spec, x, frame_ids, times, xp)
    if a is None:
        y = x2 @ xp.permute_dims(params["weight"], (1, 0))
    else:
        y = (per_sample_weights(spec, params, a, xp) @ x2[:, :, None])[:, :, 0]
    if spec.bias:
        y = y + params["bias"]
    return xp.reshape(y, (*lead, spec.out_features))


def resfield_linear_vjp(
    spec: LinearSpec,
    params: Params,
    x: Array,
    grad_y: Array,
    frame_ids: Array | None = None,
    times: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Gradients of ``sum(grad_y * resfield_linear(...))`` w.r.t. ``x`` (``(..., I)``) and every
    parameter (same names and shapes as ``params``). Times get no gradient (they are data)."""
    xp = array_namespace(x)
    x2, a, lead = _flatten_inputs(spec, x, frame_ids, times, xp)
    o, i = spec.out_features, spec.in_features
    g = xp.reshape(grad_y, (-1, o))
    grads: dict[str, Array] = {}
    if spec.bias:
        grads["bias"] = xp.sum(g, axis=0)
    if a is None:
        grads["weight"] = xp.permute_dims(g, (1, 0)) @ x2
        return xp.reshape(g @ params["weight"], (*lead, i)), grads

    rf = spec.resfield
    weights = per_sample_weights(spec, params, a, xp)  # (N, O, I)
    grad_x = (xp.permute_dims(weights, (0, 2, 1)) @ g[:, :, None])[:, :, 0]
    outer = g[:, :, None] * x2[:, None, :]  # dL/dW(t_n): (N, O, I)
    grads["weight"] = xp.sum(outer, axis=0)
    outer_flat = xp.reshape(outer, (-1, o * i))
    if rf.compression == "none":
        grads["residuals"] = xp.reshape(xp.permute_dims(a, (1, 0)) @ outer_flat, (rf.capacity, o, i))
        return xp.reshape(grad_x, (*lead, i)), grads

    basis = residual_basis(rf, params, xp)  # (R, O, I)
    c = a @ params["coefficients"]  # (N, R)
    grad_c = outer_flat @ xp.permute_dims(xp.reshape(basis, (rf.rank, o * i)), (1, 0))  # (N, R)
    grads["coefficients"] = xp.permute_dims(a, (1, 0)) @ grad_c
    grad_basis = xp.reshape(xp.permute_dims(c, (1, 0)) @ outer_flat, (rf.rank, o, i))  # (R, O, I)
    if rf.compression == "vm":
        grads["matrices"] = grad_basis
    elif rf.compression == "cp":
        u, v = params["out_factors"], params["in_factors"]
        grads["out_factors"] = xp.sum(grad_basis * v[:, None, :], axis=2)
        grads["in_factors"] = xp.sum(grad_basis * u[:, :, None], axis=1)
    else:
        core, u, v = params["core"], params["out_factors"], params["in_factors"]
        gb_v = xp.tensordot(grad_basis, v, axes=([2], [1]))  # (a, o, d) = sum_i gM[a,o,i] v[d,i]
        gb_u = xp.tensordot(grad_basis, u, axes=([1], [1]))  # (a, i, b) = sum_o gM[a,o,i] u[b,o]
        # dcore[a,b,d] = sum_o sum_i gM[a,o,i] u[b,o] v[d,i]
        grads["core"] = xp.tensordot(gb_v, u, axes=([1], [1]))  # (a, d, b)
        grads["core"] = xp.permute_dims(grads["core"], (0, 2, 1))
        # du[b,o] = sum_a sum_d core[a,b,d] gb_v[a,o,d]
        grads["out_factors"] = xp.tensordot(core, gb_v, axes=([0, 2], [0, 2]))
        # dv[d,i] = sum_a sum_b core[a,b,d] gb_u[a,i,b]
        grads["in_factors"] = xp.tensordot(core, gb_u, axes=([0, 1], [0, 2]))
    return xp.reshape(grad_x, (*lead, i)), grads
