"""resfields: residual neural fields (ResFields, ICLR 2024) on several array backends.

``resfields.from_pretrained``, ``save_pretrained`` and ``push_to_hub`` come from :mod:`resfields.zoo`
(imported on first use, so ``import resfields`` stays light).
"""

from typing import Any

__all__ = ["from_pretrained", "push_to_hub", "save_pretrained"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from resfields import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'resfields' has no attribute {name!r}")
