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
from typing import Any

import numpy as np
from tinygrad import Tensor, dtypes

from resfields.spec import Init, ResFieldSpec
from resfields.validate import check_input_features

from ..common import ResFieldLayer
from .frames import Key, TimePlan, device_tensor, plan_times

__all__ = ["ResFieldLinear", "as_input", "init_tensor"]


def init_tensor(shape: tuple[int, ...], rule: Init, device: str | None = None) -> Tensor:
    """A new float32 Tensor of ``shape`` drawn from a spec :class:`~resfields.spec.Init` rule with
    tinygrad's RNG (seed it with ``Tensor.manual_seed``). Lazy, like ``tinygrad.nn.Linear``.

    Drawn on ``device`` (None: tinygrad's default) itself: drawing elsewhere and copying would run
    the RNG kernels on (and open) the default device, which on a GPU machine may be the CPU."""
    if rule.kind == "uniform":
        value = Tensor.uniform(*shape, low=rule.a, high=rule.b, dtype=dtypes.float32, device=device)
    elif rule.kind == "normal":
        value = Tensor.normal(*shape, mean=rule.a, std=rule.b, dtype=dtypes.float32, device=device)
    else:
        value = Tensor.full(shape, rule.a, dtype=dtypes.float32, device=device)
    if rule.zero_columns:
        mask = np.ones(shape, dtype=np.float32)
        for start, stop in rule.zero_columns:
            mask[:, start:stop] = 0.0
        value = value * Tensor(mask, device=value.device)
    return value.contiguous()


def as_input(x: Tensor | np.ndarray, device: str | None = None) -> Tensor:
    """Accept a Tensor as is; turn anything else (NumPy, lists) into a float32 Tensor on ``device``."""
    return x if isinstance(x, Tensor) else device_tensor(np.asarray(x, dtype=np.float32), device)


class ResFieldLinear(ResFieldLayer):
    """``y = x (W + dW(t))^T + b``: ``tinygrad.nn.Linear`` with a weight that depends on time.

    Arguments: ``in_features``, ``out_features``, ``bias`` as ``tinygrad.nn.Linear``, then keywords
    ``rank``, ``capacity``, ``mode`` ("lookup"/"interpolation") and ``compression`` (see
    :class:`~resfields.backends.common.ResFieldLayer`).

    Call: ``layer(x, frame_ids=None, times=None, validate=True)`` with ``x`` of shape
    ``(..., in_features)`` and ``frame_ids``/``times`` broadcasting against ``x.shape[:-1]``
    (``(B, 1)`` with ``(B, S, F)`` is one frame per row, ``(N,)`` with ``(N, F)`` one per sample, a
    scalar one for all). Returns ``(..., out_features)``. ``validate=False`` skips the value checks
    (frame range, NaN) that read the key back from the device; use it inside ``TinyJit``.

    ``ResFieldLinear.from_spec(spec, rules=None, device=None)`` builds from a
    :class:`~resfields.spec.LinearSpec`; ``rules`` (bare parameter names) overrides
    ``init_rules(spec)``, which a field passes since Siren and geometric inits depend on the layer's
    place in the field. ``device`` (a tinygrad device name; None: the default) is where the
    parameters are created and drawn; the constructor takes it as a keyword too.
    """

    weight: Tensor
    bias: Tensor | None

    # the primitives of the shared layer (resfields.backends.common.ResFieldLayer)
    def _new_parameter(self, name: str, shape: tuple[int, ...], device: str | None = None, **options: Any) -> None:
        # a lazy placeholder holds the attribute's place (get_state_dict's order) and the device the
        # draw uses; it is never realised
        setattr(self, name, Tensor.empty(*shape, dtype=dtypes.float32, device=device))

    def _draw_parameter(self, name: str, rule: Init) -> None:
        old = getattr(self, name)
        setattr(self, name, init_tensor(tuple(old.shape), rule, old.device))

    def _no_parameter(self, name: str) -> None:
        setattr(self, name, None)

    def _einsum(self, equation: str, *operands: Tensor) -> Tensor:
        return Tensor.einsum(equation, *operands)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # ------------------------------------------------------------------ kernel

    def row_weights(self, matrix: Tensor) -> Tensor:
        """``W + dW`` for every row of a time matrix ``(rows, C)`` -> ``(rows, O, I)``."""
        capacity = typing.cast(ResFieldSpec, self.spec.resfield).capacity
        delta = self.residuals_from(matrix @ self.time_table().reshape(capacity, -1))
        return self.weight.reshape(1, self.out_features, self.in_features) + delta

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
