"""The network: `MBTConfig` and `MBT`."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # the lazy exports below, imported statically for type checkers and editors
    from ..errors import ConfigError as ConfigError
    from .config import (
        FUSION_VARIANTS as FUSION_VARIANTS,
        MODALITIES as MODALITIES,
        VIT_SIZES as VIT_SIZES,
        LayerKind as LayerKind,
        MBTConfig as MBTConfig,
        fusion_variant as fusion_variant,
        sampled_frame_indices as sampled_frame_indices,
    )
    from .mbt import MBT as MBT, MBTOutput as MBTOutput

_EXPORTS = {
    "FUSION_VARIANTS": ".config",
    "MBT": ".mbt",
    "MODALITIES": ".config",
    "VIT_SIZES": ".config",
    "ConfigError": "..errors",
    "LayerKind": ".config",
    "MBTConfig": ".config",
    "MBTOutput": ".mbt",
    "fusion_variant": ".config",
    "sampled_frame_indices": ".config",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
