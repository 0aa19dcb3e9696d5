"""Weights: official Scenic checkpoints, ImageNet ViT initialisation, mbt's own format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import lazy_exports

if TYPE_CHECKING:  # the lazy exports below, imported statically for type checkers and editors
    from ..models.mbt import MBT
    from ..models.pretrained import save_pretrained as save_pretrained
    from .scenic import from_scenic as from_scenic, to_scenic as to_scenic

_EXPORTS = {"from_scenic": ".scenic", "save_pretrained": "..models.pretrained", "to_scenic": ".scenic"}
__all__ = sorted([*_EXPORTS, "load_pretrained"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def load_pretrained(directory: str, map_location: Any = "cpu", *, require_checksum: bool = False) -> MBT:
    """The model saved in a `save_pretrained` folder (bit-exact): `MBT.from_pretrained`."""
    from ..models.mbt import MBT

    return MBT.from_pretrained(directory, map_location=map_location, require_checksum=require_checksum)
