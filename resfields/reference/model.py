"""The float64 reference as an inference backend: task forwards written once (for torch and tinygrad)
also run on NumPy, so a checkpoint can be rendered or evaluated by the oracle itself.

Task code calls tensor methods that torch and tinygrad share (``.abs()``, ``.exp()``, ``.sigmoid()``,
``.unsqueeze()``, ...); :class:`RefArray` is a float64 ``ndarray`` with those few methods. Fields
are evaluated by :func:`~resfields.reference.field_forward`: rows that share one time key go through
the field with that key's weights ``W(t)`` computed once (by the reference layer itself, from the
images of the unit vectors), which is the same arithmetic as per-row weights without materialising
an ``(N, O, I)`` tensor per layer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from resfields.errors import SpecError
from resfields.reference.fields import _layer_params, field_forward
from resfields.reference.layer import resfield_linear
from resfields.spec import AnySpec, LinearSpec, MLPSpec, ModelSpec, SirenSpec, layer_specs, parameter_shapes
from resfields.validate import broadcast_time_shape, check_device, check_predict_inputs

__all__ = ["BACKEND", "RefArray", "ReferenceBackend", "ReferenceField", "ReferenceModel"]


class RefArray(np.ndarray):
    """A float64 array with the tensor methods task code shares between torch and tinygrad."""

    def abs(self) -> RefArray:
        return np.abs(self)

    def exp(self) -> RefArray:
        return np.exp(self)

    def log(self) -> RefArray:
        return np.log(self)

    def cos(self) -> RefArray:
        return np.cos(self)

    def sin(self) -> RefArray:
        return np.sin(self)

    def sign(self) -> RefArray:
        return np.sign(self)

    def sqrt(self) -> RefArray:
        return np.sqrt(self)

    def square(self) -> RefArray:
        return np.square(self)

    def sigmoid(self) -> RefArray:
        return 0.5 * (1.0 + np.tanh(0.5 * self))  # tanh form: no overflow for large |x|

    def relu(self) -> RefArray:
        return np.maximum(self, 0.0)

    def unsqueeze(self, axis: int) -> RefArray:
        return np.expand_dims(self, axis)


def ref(array: Any) -> RefArray:
    """``array`` as a float64 :class:`RefArray` (integer arrays keep their dtype: they are keys)."""
    a = np.asarray(array)
    return (a if a.dtype.kind in "iub" else a.astype(np.float64)).view(RefArray)


def _baked_weights(layer: LinearSpec, params: dict[str, np.ndarray], key: Any, which: str) -> np.ndarray:
    """``W(t)`` (O, I) of one ResField layer at one key: the layer applied to the unit vectors."""
    eye = np.eye(layer.in_features)
    y = resfield_linear(layer, params, eye, **{which: np.full(layer.in_features, key)})
    return (y - params["bias"] if layer.bias else y).T


class ReferenceField:
    """One field of a checkpoint, called like the backends' fields:
    ``field(x (..., I), frame_ids=None, times=None, *, encoding_window=None, validate=True) -> (..., O)``."""

    def __init__(self, spec: AnySpec, params: dict[str, np.ndarray]) -> None:
        self.spec, self.params = spec, {k: np.asarray(v, np.float64) for k, v in params.items()}

    def _static(self, key: Any, which: str) -> tuple[AnySpec, dict[str, np.ndarray]]:
        """The field at one time key, as a field without ResField layers."""
        spec = self.spec
        params = {k: v for k, v in self.params.items() if k.rsplit(".", 1)[-1] in ("weight", "bias")}
        for i, layer in enumerate(layer_specs(spec)):
            if layer.resfield is not None:
                params[f"layers.{i}.weight"] = _baked_weights(layer, _layer_params(self.params, i), key, which)
        static = replace(spec, resfield_layers=(), resfield=None)
        assert set(parameter_shapes(static)) == set(params)
        return static, params

    def __call__(
        self,
        x: Any,
        frame_ids: Any = None,
        times: Any = None,
        *,
        encoding_window: Any = None,
        validate: bool = True,
    ) -> RefArray:
        x = np.asarray(x, np.float64)
        window = None if encoding_window is None else np.asarray(encoding_window, np.float64)
        extra = {} if window is None else {"encoding_window": window}
        if self.spec.resfield is None or (frame_ids is None and times is None):
            return ref(field_forward(self.spec, self.params, x, frame_ids=frame_ids, times=times, **extra))
        which, key = ("frame_ids", frame_ids) if frame_ids is not None else ("times", times)
        key = np.asarray(key)
        broadcast_time_shape(tuple(key.shape), tuple(x.shape[:-1]), which)
        key = np.broadcast_to(key, x.shape[:-1])  # each distinct key is checked (range, NaN) when baked
        out = np.empty((*x.shape[:-1], self.spec.out_features))
        for value in np.unique(key):
            rows = key == value
            static, params = self._static(value, which)
            out[rows] = field_forward(static, params, x[rows], **extra)
        return ref(out)


class ReferenceModel:
    """A :class:`~resfields.spec.ModelSpec` (or one field) on the reference: fields as
    :class:`ReferenceField` attributes, free arrays as :class:`RefArray` attributes, by name."""

    def __init__(self, spec: AnySpec, arrays: dict[str, np.ndarray]) -> None:
        self.spec = spec
        if not isinstance(spec, ModelSpec):
            self.field = ReferenceField(spec, arrays)
            return
        for name, field_spec in spec.fields:
            prefix = f"{name}."
            setattr(
                self,
                name,
                ReferenceField(field_spec, {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}),
            )
        for name, _ in spec.arrays:
            setattr(self, name, ref(arrays[name]))

    def __call__(self, x: Any, frame_ids: Any = None, times: Any = None, **kw: Any) -> RefArray:
        if isinstance(self.spec, ModelSpec):
            raise SpecError("a model of several fields is combined by a task's forward, not called directly")
        return self.field(x, frame_ids, times, **kw)


CHUNK = 16384  # rows per float64 pass: bounds the activations' memory, not the result


def _rows_of(key: Any, rows: slice, n: int) -> Any:
    """A chunk's keys: per-row keys (N,) are sliced, a shared (scalar) key is passed on."""
    return key[rows] if key is not None and np.ndim(key) >= 1 and len(key) == n else key


class ReferenceBackend:
    """Inference on the NumPy float64 reference (no training): ``build``, ``infer``, ``predict``, ``concat``."""

    name = "numpy"

    def check_device(self, device: str | None) -> None:
        """SpecError unless ``device`` is None or "cpu"."""
        check_device(self.name, device, ["cpu"], "the float64 reference runs on the CPU only")

    def build(self, spec: AnySpec, arrays: dict[str, np.ndarray], device: str | None = None) -> ReferenceModel:
        self.check_device(device)
        if isinstance(spec, LinearSpec | SirenSpec | MLPSpec | ModelSpec):
            return ReferenceModel(spec, arrays)
        raise SpecError(f"cannot build {type(spec).__name__}")

    def concat(self, tensors: list[Any], axis: int) -> RefArray:
        return ref(np.concatenate([np.asarray(t) for t in tensors], axis=axis))

    def infer(self, model: ReferenceModel, forward: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``forward(model, batch)`` in float64; outputs as float64 NumPy arrays."""
        out = forward(model, {k: ref(v) for k, v in batch.items()})
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    def predict(self, model: ReferenceModel, x: np.ndarray, frame_ids: Any = None, times: Any = None) -> np.ndarray:
        """``model(x)`` in float64: ``x`` ``(N, I)``, keys ``(N,)`` -> ``(N, O)`` (``N = 0`` included)."""
        x = np.asarray(x)
        if not isinstance(model.spec, ModelSpec):  # a model of several fields refuses the call itself
            keys = {"frame_ids": frame_ids, "times": times}
            shapes = {k: None if v is None else np.shape(v) for k, v in keys.items()}
            check_predict_inputs(x.shape, model.spec.in_features, shapes)
        out = []
        for start in range(0, max(len(x), 1), CHUNK):  # an empty x is one empty chunk: (0, O)
            rows = slice(start, start + CHUNK)
            ids, ts = (_rows_of(key, rows, len(x)) for key in (frame_ids, times))
            out.append(np.asarray(model(x[rows], ids, ts)))
        return np.concatenate(out)

    def owns(self, model: Any) -> bool:
        return isinstance(model, ReferenceModel)

    def to_numpy(self, model: ReferenceModel) -> dict[str, np.ndarray]:
        """Canonical ``{name: float32 array}`` of the model's parameters (what :meth:`build` was given)."""
        if not isinstance(model.spec, ModelSpec):
            return {k: v.astype(np.float32) for k, v in model.field.params.items()}
        arrays = {}
        for name, _ in model.spec.fields:
            arrays.update({f"{name}.{k}": v.astype(np.float32) for k, v in getattr(model, name).params.items()})
        for name, _ in model.spec.arrays:
            arrays[name] = np.asarray(getattr(model, name), np.float32)
        return arrays


BACKEND = ReferenceBackend()
