"""mbt: Multimodal Bottleneck Transformers for audio-visual classification in PyTorch."""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:  # the lazy exports below, imported statically for type checkers and editors
    from . import export as export, probe as probe, timeline as timeline, train as train
    from .api import embed as embed, evaluate as evaluate, explain as explain, predict as predict
    from .errors import ConfigError as ConfigError
    from .inference import Predictor as Predictor
    from .models import MBT as MBT, MBTConfig as MBTConfig, MBTOutput as MBTOutput
    from .weights import (
        from_scenic as from_scenic,
        load_pretrained as load_pretrained,
        save_pretrained as save_pretrained,
        to_scenic as to_scenic,
    )

__version__ = "0.2.0"
"""The one version: the wheel's (pyproject reads it), `mbt --version`, `mbt_version` in saved
models' config.json; CHANGELOG.md says what each one changed."""

_EXPORTS = {
    "MBT": ".models",
    "ConfigError": ".errors",
    "MBTConfig": ".models",
    "MBTOutput": ".models",
    "Predictor": ".inference",
    "from_scenic": ".weights",
    "load_pretrained": ".weights",
    "save_pretrained": ".weights",
    "to_scenic": ".weights",
    # the command's verbs, with its options' names (mbt.api); train, export, timeline and probe
    # are also the modules that implement them, callable (mbt._lazy.callable_module)
    "embed": ".api",
    "evaluate": ".api",
    "explain": ".api",
    "predict": ".api",
    "train": ".train",
    "export": ".export",
    "timeline": ".timeline",
    "probe": ".probe",
}
_VERB_MODULES = ("train", "export", "timeline", "probe")
__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _VERB_MODULES)
