"""resfields: residual neural fields (ResFields, ICLR 2024) on several array backends.

``resfields.from_pretrained``, ``save_pretrained`` and ``push_to_hub`` come from :mod:`resfields.zoo`
(imported on first use, so ``import resfields`` stays light).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

_ZOO = ("from_pretrained", "push_to_hub", "save_pretrained")  # from resfields.zoo, on first use
__all__ = ["__version__", *_ZOO]

try:
    __version__ = version("resfields")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in _ZOO:
        from resfields import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'resfields' has no attribute {name!r}")
