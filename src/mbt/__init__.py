"""mbt: Multimodal Bottleneck Transformers for audio-visual classification in PyTorch."""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:  # the lazy exports below, imported statically for type checkers and editors
    from .errors import ConfigError as ConfigError
    from .inference import Predictor as Predictor, embed as embed, explain as explain, predict as predict
    from .models import MBT as MBT, MBTConfig as MBTConfig, MBTOutput as MBTOutput
    from .weights import (
        from_scenic as from_scenic,
        load_pretrained as load_pretrained,
        save_pretrained as save_pretrained,
        to_scenic as to_scenic,
    )

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
