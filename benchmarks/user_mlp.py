"""The kind of MLP a researcher writes around ResField layers, for the compiled benchmark."""

from __future__ import annotations

import torch
from torch import nn

from resfields.backends.torch import ResFieldLinear


class UserMLP(nn.Module):
    """``(B, S, 3) -> (B, S, 1)``: a linear layer, three hidden layers (ResField layers sharing one
    plan, or ``nn.Linear`` for the vanilla twin), a linear head; ReLU between."""

    def __init__(self, width: int, capacity: int, *, resfield: bool = True, rank: int = 10) -> None:
        super().__init__()
        self.resfield = resfield
        self.first = nn.Linear(3, width)
        self.hidden = nn.ModuleList(
            ResFieldLinear(width, width, rank=rank, capacity=capacity) if resfield else nn.Linear(width, width)
            for _ in range(3)
        )
        self.last = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, frame_ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        plan = self.hidden[0].plan(h, frame_ids=frame_ids, validate=False) if self.resfield else None
        for layer in self.hidden:
            h = torch.relu(layer(h, plan=plan) if self.resfield else layer(h))
        return self.last(h)
