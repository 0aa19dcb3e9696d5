"""The network: `MBTConfig` and `MBT`."""

from .._lazy import lazy_exports

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
