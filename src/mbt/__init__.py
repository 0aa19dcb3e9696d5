"""mbt: Multimodal Bottleneck Transformers for audio-visual classification in PyTorch."""

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "MBT": ".models",
    "ConfigError": ".errors",
    "MBTConfig": ".models",
    "MBTOutput": ".models",
    "Predictor": ".inference",
    "embed": ".inference",
    "explain": ".inference",
    "from_scenic": ".weights",
    "load_pretrained": ".weights",
    "predict": ".inference",
    "save_pretrained": ".weights",
    "to_scenic": ".weights",
}
__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
