"""The ResField linear layer for tinygrad, in ``tinygrad.nn`` style (a plain class).

Parameters are plain attributes with the canonical names of :func:`resfields.spec.parameter_shapes`
(``weight``, ``bias``, ``coefficients``, ``matrices``, ...), so ``tinygrad.nn.state.get_state_dict``
and ``get_parameters`` find them by structure.

Compute strategy (see :class:`~resfields.backends.tinygrad.frames.TimePlan`): the batch is
``(rows, per_row, I)`` with one time per row.

* ``per_row > 1`` (e.g. ``frame_ids`` of shape ``(B, 1)`` with ``x`` of shape ``(B, S, I)``, or a
  scalar key): build one weight per row, ``W + dW(t_row)`` ``(rows, O, I)``, and batch-matmul.
* one key per sample (``per_row == 1``), vm/cp/tucker: never build per-sample weights; use
  ``y = x W^T + b + sum_r c_r(t_n) (x M_r^T)``, which for cp/tucker factors further into
  ``O(N R (I + O))`` work.
* one key per sample, ``compression="none"``: per-sample weights ``(N, O, I)`` are materialised
  (``N O I`` floats of memory; the residuals have no low-rank structure to exploit).

All shapes are fixed by the input shapes and every branch depends only on shapes and the spec, so
the layer can run inside ``TinyJit`` (call it with ``validate=False`` there).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping

import numpy as np
from tinygrad import Tensor, dtypes

from resfields.spec import Init, LinearSpec, ResFieldSpec, init_rules, parameter_shapes
from resfields.validate import check_input_features

from .frames import Key, TimePlan, device_tensor, plan_times

__all__ = ["ResFieldLinear", "as_input", "init_tensor"]


def init_tensor(shape: tuple[int, ...], rule: Init) -> Tensor:
    """A new float32 Tensor of ``shape`` drawn from a spec :class:`~resfields.spec.Init` rule with
    tinygrad's RNG (seed it with ``Tensor.manual_seed``). Lazy, like ``tinygrad.nn.Linear``."""
    if rule.kind == "uniform":
        value = Tensor.uniform(*shape, low=rule.a, high=rule.b, dtype=dtypes.float32)
    elif rule.kind == "normal":
        value = Tensor.normal(*shape, mean=rule.a, std=rule.b, dtype=dtypes.float32)
    else:
        value = Tensor.full(shape, rule.a, dtype=dtypes.float32)
    if rule.zero_columns:
        mask = np.ones(shape, dtype=np.float32)
        for start, stop in rule.zero_columns:
            mask[:, start:stop] = 0.0
        value = value * Tensor(mask, device=value.device)
    return value.contiguous()


def as_input(x: Tensor | np.ndarray, device: str | None = None) -> Tensor:
    """Accept a Tensor as is; turn anything else (NumPy, lists) into a float32 Tensor on ``device``."""
    return x if isinstance(x, Tensor) else device_tensor(np.asarray(x, dtype=np.float32), device)


class ResFieldLinear:
    """``y = x (W + dW(t))^T + b``: ``tinygrad.nn.Linear`` with a weight that depends on time.

    Args:
        in_features, out_features, bias: as ``tinygrad.nn.Linear``.
        rank: number of residual bases R (omit for ``compression="none"``).
        capacity: number of time coefficients C (usually the number of frames).
        mode: "lookup" (call with integer ``frame_ids`` in [0, C)) or "interpolation" (call with
            ``times`` in [-1, 1]; see :mod:`resfields.spec` for the time convention).
        compression: "vm" (default), "none", "cp" or "tucker".

    Call: ``layer(x, frame_ids=None, times=None, validate=True)`` with ``x`` of shape
    ``(..., in_features)`` and ``frame_ids``/``times`` broadcasting against ``x.shape[:-1]``
    (``(B, 1)`` with ``(B, S, F)`` is one frame per row, ``(N,)`` with ``(N, F)`` one per sample, a
    scalar one for all). Returns ``(..., out_features)``. ``validate=False`` skips the value checks
    (frame range, NaN) that read the key back from the device; use it inside ``TinyJit``.
    """

    weight: Tensor
    bias: Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int | None = None,
        capacity: int,
        mode: str = "lookup",
        compression: str = "vm",
    ) -> None:
        rf = ResFieldSpec(capacity=capacity, rank=rank, mode=mode, compression=compression)  # type: ignore[arg-type]
        self._setup(LinearSpec(in_features, out_features, bias, rf))

    @classmethod
    def from_spec(cls, spec: LinearSpec, rules: Mapping[str, Init] | None = None) -> ResFieldLinear:
        """Build from a :class:`~resfields.spec.LinearSpec` (``resfield=None`` gives a static layer).

        ``rules`` (bare parameter names) overrides ``init_rules(spec)``; a field passes its own,
        since Siren and geometric inits depend on the layer's place in the field.
        """
        layer = cls.__new__(cls)
        layer._setup(spec, rules)
        return layer

    def _setup(self, spec: LinearSpec, rules: Mapping[str, Init] | None = None) -> None:
        self.spec = spec
        self.in_features, self.out_features = spec.in_features, spec.out_features
        self.bias = None
        rules = init_rules(spec) if rules is None else rules
        for name, shape in parameter_shapes(spec).items():
            setattr(self, name, init_tensor(shape, rules[name]))

    @property
    def resfield(self) -> ResFieldSpec | None:
        """The layer's :class:`~resfields.spec.ResFieldSpec`, or None for a static layer."""
        return self.spec.resfield

    def __repr__(self) -> str:
        rf = self.spec.resfield
        text = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.spec.bias}"
        if rf is not None:
            text += f", rank={rf.rank}, capacity={rf.capacity}, mode={rf.mode}, compression={rf.compression}"
        return f"ResFieldLinear({text})"

    # ------------------------------------------------------------------ math

    def residual_basis(self) -> Tensor:
        """``(R, O, I)`` matrices with ``dW(t) = sum_r c_r(t) M_r`` (vm, cp, tucker)."""
        rf = typing.cast(ResFieldSpec, self.spec.resfield)
        if rf.compression == "vm":
            return self.matrices
        u, v = self.out_factors, self.in_factors  # (R, O), (R, I)
        if rf.compression == "cp":
            return u.reshape(-1, self.out_features, 1) * v.reshape(-1, 1, self.in_features)
        return Tensor.einsum("abd,bo,di->aoi", self.core, u, v)

    def row_weights(self, matrix: Tensor) -> Tensor:
        """``W + dW`` for every row of a time matrix ``(rows, C)`` -> ``(rows, O, I)``."""
        rf = typing.cast(ResFieldSpec, self.spec.resfield)
        o, i = self.out_features, self.in_features
        if rf.compression == "none":
            delta = matrix @ self.residuals.reshape(rf.capacity, o * i)
        else:
            delta = (matrix @ self.coefficients) @ self.residual_basis().reshape(-1, o * i)
        return self.weight.reshape(1, o, i) + delta.reshape(matrix.shape[0], o, i)

    def _low_rank(self, x: Tensor, matrix: Tensor) -> Tensor:
        """``x W^T + sum_r c_r(t_n) (x M_r^T)`` for one key per sample: x ``(N, I)`` -> ``(N, O)``."""
        rf = typing.cast(ResFieldSpec, self.spec.resfield)
        rank, o = typing.cast(int, rf.rank), self.out_features
        n = x.shape[0]
        c = matrix @ self.coefficients  # (N, R)
        y = x @ self.weight.T
        if rf.compression == "vm":
            xm = (x @ self.matrices.reshape(rank * o, self.in_features).T).reshape(n, rank, o)
            return y + (c.reshape(n, rank, 1) * xm).sum(1)
        xv = x @ self.in_factors.T  # (N, R): x . v_d
        if rf.compression == "cp":
            return y + (c * xv) @ self.out_factors
        # tucker: dW x = sum_b u_b sum_d (sum_a c_a G_abd) (v_d . x)
        cg = (c @ self.core.reshape(rank, rank * rank)).reshape(n, rank, rank)  # (N, b, d)
        return y + (cg * xv.reshape(n, 1, rank)).sum(2) @ self.out_factors

    def forward_planned(self, x: Tensor, plan: TimePlan | None) -> Tensor:
        """The layer on a flat batch ``(N, I) -> (N, O)`` with ``N = plan.rows * plan.per_row``."""
        rf = self.spec.resfield
        if rf is None or plan is None:
            return x.linear(self.weight.T, self.bias)
        if plan.per_row == 1 and rf.compression != "none":
            y = self._low_rank(x, plan.matrix)
        else:
            weights = self.row_weights(plan.matrix)  # (rows, O, I)
            xr = x.reshape(plan.rows, plan.per_row, self.in_features)
            y = (xr @ weights.transpose(1, 2)).reshape(x.shape[0], self.out_features)
        return y if self.bias is None else y + self.bias

    def __call__(
        self,
        x: Tensor | np.ndarray,
        frame_ids: Key | None = None,
        times: Key | None = None,
        *,
        validate: bool = True,
    ) -> Tensor:
        """``(..., I) -> (..., O)``; see the class docstring for ``frame_ids``/``times``."""
        x = as_input(x, self.weight.device)
        check_input_features(tuple(x.shape), self.in_features)
        lead = tuple(x.shape[:-1])
        plan = plan_times(self.spec.resfield, lead, frame_ids, times, validate, x.device)
        y = self.forward_planned(x.reshape(math.prod(lead), self.in_features), plan)
        return y.reshape(*lead, self.out_features)
