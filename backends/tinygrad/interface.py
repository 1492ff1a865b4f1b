"""The tinygrad backend behind the common :class:`resfields.backends.Backend` interface."""

from __future__ import annotations

from typing import Any

import numpy as np
from tinygrad import Device, Tensor, dtypes
from tinygrad.nn.state import get_state_dict

from resfields.errors import SpecError
from resfields.spec import FieldSpec
from resfields.validate import check_device

from .fields import Field, Model, build_field
from .frames import device_tensor
from .layer import ResFieldLinear
from .state import load_parameters, parameters_to_numpy
from .training import TinygradTrainer, infer, predict

# tinygrad names devices in capitals; the library uses torch-style lower case
_DEVICES = {"cpu": "CPU", "cuda": "CUDA"}


def tinygrad_device(device: str | None) -> str:
    """The tinygrad name of a library device: ``"cpu"`` (and None) -> ``"CPU"``, ``"cuda:1"`` -> ``"CUDA:1"``.

    Always explicit, never tinygrad's default device (which is the GPU wherever there is one)."""
    name = "cpu" if device is None else str(device)
    kind, _, index = name.partition(":")
    return _DEVICES.get(kind, kind.upper()) + (f":{index}" if index else "")


class TinygradBackend:
    name = "tinygrad"
    dtypes = ("float32",)

    def devices(self) -> list[str]:
        found = ["cpu"]
        try:
            Device["CUDA"]
            found.append("cuda")
        except Exception:  # no CUDA runtime or GPU: tinygrad raises from the driver layer
            pass
        return found

    def check_device(self, device: str | None) -> None:
        """SpecError unless ``device`` (None: the CPU) exists here; checked when a model is built,
        because tinygrad itself accepts any device name until the first kernel runs on it."""
        if device is not None and device != "cpu":
            no_gpu = str(device).startswith("cuda") and "cuda" not in self.devices()
            check_device(
                self.name, device, self.devices(), "CUDA was requested but tinygrad finds no CUDA device" * no_gpu
            )

    def build(self, spec: FieldSpec, arrays: dict[str, np.ndarray] | None = None, device: str | None = None) -> Any:
        self.check_device(device)
        # created, drawn and loaded on the device itself: drawing on tinygrad's default device and
        # moving afterwards ran the RNG kernels there, and "cpu" left the model on the default
        # device, which on a GPU machine is the GPU
        model = build_field(spec, tinygrad_device(device))
        if arrays is not None:
            load_parameters(model, arrays)
        return model

    def to_numpy(self, model: Any) -> dict[str, np.ndarray]:
        return parameters_to_numpy(model)

    def owns(self, model: Any) -> bool:
        return isinstance(model, ResFieldLinear | Field | Model)

    def trainer(
        self, model: Any, loss: Any, lr: float, forward: Any = None, distributed: bool = False
    ) -> TinygradTrainer:
        if distributed:
            raise SpecError("tinygrad has no DistributedDataParallel: train on several processes with --backend torch")
        return TinygradTrainer(model, loss, lr, forward)

    def predict(self, model, x, frame_ids=None, times=None) -> np.ndarray:
        return predict(model, x, frame_ids, times)

    def infer(self, model: Any, forward: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return infer(model, forward, batch)

    def concat(self, tensors: list[Tensor], axis: int) -> Tensor:
        return tensors[0].cat(*tensors[1:], dim=axis)

    def tensor(self, array: np.ndarray, like: Tensor) -> Tensor:
        return device_tensor(np.asarray(array, dtype=np.float32), like.device)

    def value_and_grad(self, model, x, cotangent, frame_ids=None, times=None, dtype="float32", encoding_window=None):
        if dtype != "float32":
            raise ValueError(f"the tinygrad backend is checked in float32 only, not {dtype}")
        params = get_state_dict(model)
        device = next(iter(params.values())).device
        for p in params.values():
            p.requires_grad, p.grad = True, None
        xt = Tensor(np.asarray(x, dtype=np.float32), device=device)
        xt.requires_grad = True
        # keys stay NumPy: the field validates them on the host, then copies them to x's device
        ids = None if frame_ids is None else np.asarray(frame_ids, dtype=np.int32)
        ts = None if times is None else np.asarray(times, dtype=np.float32)
        window = {} if encoding_window is None else {"encoding_window": np.asarray(encoding_window, np.float32)}
        y = model(xt, frame_ids=ids, times=ts, **window)
        (y * Tensor(np.asarray(cotangent, dtype=np.float32), device=device)).sum().backward()
        grads = {k: _np(p.grad) if p.grad is not None else np.zeros(p.shape) for k, p in params.items()}
        return _np(y), _np(xt.grad), grads


def _np(t: Tensor) -> np.ndarray:
    return t.cast(dtypes.float32).numpy().astype(np.float64)


BACKEND = TinygradBackend()
