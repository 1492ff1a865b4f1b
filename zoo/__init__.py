"""The model zoo: ``from_pretrained``, ``save_pretrained``, ``push_to_hub`` and the pretrained checkpoints.

See :mod:`resfields.zoo.pretrained` (loading and saving), :mod:`resfields.zoo.hub` (Hub transport),
:mod:`resfields.zoo.registry` (the shipped checkpoints) and :mod:`resfields.zoo.recipes` (how each was
trained).
"""

from .hub import push_to_hub
from .pretrained import Pretrained, from_pretrained, save_pretrained
from .registry import get_entry, load_registry

__all__ = ["Pretrained", "from_pretrained", "get_entry", "load_registry", "push_to_hub", "save_pretrained"]
