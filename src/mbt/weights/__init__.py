"""Weights: official Scenic checkpoints, ImageNet ViT initialisation, mbt's own format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ..models.mbt import MBT

_EXPORTS = {"from_scenic": ".scenic", "save_pretrained": "..models.pretrained", "to_scenic": ".scenic"}
__all__ = sorted([*_EXPORTS, "load_pretrained"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def load_pretrained(directory: str, map_location: Any = "cpu") -> MBT:
    """The model saved in a `save_pretrained` folder (bit-exact): `MBT.from_pretrained`."""
    from ..models.mbt import MBT

    return MBT.from_pretrained(directory, map_location=map_location)
