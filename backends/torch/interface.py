"""The torch backend behind the common :class:`resfields.backends.Backend` interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from resfields.spec import FieldSpec
from resfields.validate import check_device

from .fields import build_field
from .state import load_parameters, parameters_to_numpy
from .strategy import STRATEGIES, forced
from .training import TorchTrainer, infer, predict


class TorchBackend:
    name = "torch"
    dtypes = ("float32", "bfloat16")
    strategies = STRATEGIES[1:]  # the conformance grid runs every case under each forced layer strategy too

    def devices(self) -> list[str]:
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    def check_device(self, device: str | None) -> None:
        """SpecError unless ``device`` (None: the CPU) exists here: "cpu", "cuda" or "cuda:N"."""
        available = self.devices() + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        no_gpu = str(device).startswith("cuda") and not torch.cuda.is_available()
        why = "CUDA was requested but torch.cuda.is_available() is False" if no_gpu else ""
        check_device(self.name, device, available, why)

    def build(self, spec: FieldSpec, arrays: dict[str, np.ndarray] | None = None, device: str | None = None) -> Any:
        self.check_device(device)
        model = build_field(spec, device=device)
        return model if arrays is None else load_parameters(model, arrays)

    def to_numpy(self, model: Any) -> dict[str, np.ndarray]:
        return parameters_to_numpy(model)

    def owns(self, model: Any) -> bool:
        return isinstance(model, torch.nn.Module) and hasattr(model, "spec")

    def trainer(self, model: Any, loss: Any, lr: float, forward: Any = None, distributed: bool = False) -> TorchTrainer:
        """Adam on ``model``; ``distributed``: one rank of a torch.distributed run (DDP, gradients averaged)."""
        if distributed:
            from .distributed import DistributedTrainer

            return DistributedTrainer(model, loss, lr, forward)
        return TorchTrainer(model, loss, lr, forward)

    def predict(self, model, x, frame_ids=None, times=None) -> np.ndarray:
        return predict(model, x, frame_ids, times)

    def infer(self, model: Any, forward: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return infer(model, forward, batch)

    def concat(self, tensors: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(tensors, dim=axis)

    def tensor(self, array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=like.device)

    def value_and_grad(
        self, model, x, cotangent, frame_ids=None, times=None, dtype="float32", encoding_window=None, strategy="auto"
    ):
        device = next(model.parameters()).device
        model.zero_grad(set_to_none=True)
        xt = torch.tensor(x, dtype=torch.float32, device=device, requires_grad=True)
        ids = None if frame_ids is None else torch.as_tensor(frame_ids, device=device)
        ts = None if times is None else torch.as_tensor(times, dtype=torch.float32, device=device)
        # bf16 runs the way users run it: fp32 parameters under autocast
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            window = (
                {}
                if encoding_window is None
                else {"encoding_window": torch.as_tensor(encoding_window, dtype=torch.float32, device=device)}
            )
            with forced(strategy):
                y = model(xt, frame_ids=ids, times=ts, **window)
        (y.float() * torch.as_tensor(cotangent, dtype=torch.float32, device=device)).sum().backward()
        grads = {name: _np(p.grad) if p.grad is not None else np.zeros(p.shape) for name, p in model.named_parameters()}
        return _np(y), _np(xt.grad), grads


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


BACKEND = TorchBackend()
