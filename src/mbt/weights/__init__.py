"""Weights: official Scenic checkpoints, ImageNet ViT initialisation, mbt's own format."""

from ..models.mbt import MBT
from ..models.pretrained import save_pretrained
from .scenic import from_scenic, to_scenic

load_pretrained = MBT.from_pretrained
"""The model saved in a `save_pretrained` folder (bit-exact)."""

__all__ = ["from_scenic", "load_pretrained", "save_pretrained", "to_scenic"]
