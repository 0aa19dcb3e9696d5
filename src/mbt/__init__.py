"""mbt: Multimodal Bottleneck Transformers for audio-visual classification in PyTorch."""

from ._lazy import lazy_exports

__version__ = "0.2.0"
"""The one version: the wheel's (pyproject reads it), `mbt --version`, `mbt_version` in saved
models' config.json; CHANGELOG.md says what each one changed."""

_EXPORTS = {
    "MBT": ".models",
    "ConfigError": ".models",
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
