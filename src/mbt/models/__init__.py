"""The network: `MBTConfig` and `MBT`."""

from .config import (
    FUSION_VARIANTS,
    MODALITIES,
    VIT_SIZES,
    ConfigError,
    LayerKind,
    MBTConfig,
    fusion_variant,
    sampled_frame_indices,
)
from .mbt import MBT, MBTOutput

__all__ = [
    "FUSION_VARIANTS",
    "MBT",
    "MODALITIES",
    "VIT_SIZES",
    "ConfigError",
    "LayerKind",
    "MBTConfig",
    "MBTOutput",
    "fusion_variant",
    "sampled_frame_indices",
]
