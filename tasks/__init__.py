"""The paper's tasks, written once over the backend interface.

Each task module defines a class following :class:`resfields.tasks.common.task.Task`: its data
options (a dataclass), the field it fits, a batch sampler, a loss, its metrics and its media.
:func:`get_task` finds one by name; :func:`resfields.tasks.common.fit.fit` trains any of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from resfields.errors import SpecError

__all__ = ["TASKS", "get_task"]

# name -> module holding the task class `TASK`
TASKS = {
    "video": "resfields.tasks.video.task",
    "sdf": "resfields.tasks.sdf.task",
    "flow": "resfields.tasks.flow.task",
    "nerf": "resfields.tasks.nerf.task",
}


def get_task(name: str) -> Any:
    """The task class called ``name`` ("video", "sdf", "flow", "nerf"); SpecError for an unknown name."""
    if name not in TASKS:
        raise SpecError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return importlib.import_module(TASKS[name]).TASK
