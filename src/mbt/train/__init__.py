"""Training and evaluation: the paper's recipes as presets, the official losses, mixup and
schedule, metrics, a resumable DDP training loop and multi-clip evaluation.

    from mbt.train import preset, train
    cfg = preset("audioset-mini").override(["dataset.root=/data/as", "train.num_workers=8"])
    results = train(cfg, "runs/as-mini")
"""

from typing import TYPE_CHECKING

from .._lazy import callable_module, lazy_exports

if TYPE_CHECKING:  # the lazy exports below, imported statically for type checkers and editors
    from .config import DatasetConfig as DatasetConfig, ExperimentConfig as ExperimentConfig, TrainConfig as TrainConfig
    from .evaluate import EvalResult as EvalResult, evaluate as evaluate, write_predictions as write_predictions
    from .loop import NonFiniteLossError as NonFiniteLossError, train as train
    from .losses import (
        mbt_loss as mbt_loss,
        mixup as mixup,
        sigmoid_cross_entropy as sigmoid_cross_entropy,
        smooth_labels as smooth_labels,
        softmax_cross_entropy as softmax_cross_entropy,
    )
    from .metrics import (
        average_precision as average_precision,
        classification_metrics as classification_metrics,
        d_prime as d_prime,
        roc_auc as roc_auc,
        topk_accuracy as topk_accuracy,
    )
    from .optim import Schedule as Schedule, build_optimizer as build_optimizer, learning_rate as learning_rate
    from .presets import PRESETS as PRESETS, preset as preset
    from .synthetic import SyntheticAVDataset as SyntheticAVDataset

_EXPORTS = {
    "DatasetConfig": ".config",
    "EvalResult": ".evaluate",
    "ExperimentConfig": ".config",
    "NonFiniteLossError": ".loop",
    "PRESETS": ".presets",
    "Schedule": ".optim",
    "SyntheticAVDataset": ".synthetic",
    "TrainConfig": ".config",
    "average_precision": ".metrics",
    "build_optimizer": ".optim",
    "classification_metrics": ".metrics",
    "d_prime": ".metrics",
    "evaluate": ".evaluate",
    "learning_rate": ".optim",
    "mbt_loss": ".losses",
    "mixup": ".losses",
    "preset": ".presets",
    "roc_auc": ".metrics",
    "sigmoid_cross_entropy": ".losses",
    "smooth_labels": ".losses",
    "softmax_cross_entropy": ".losses",
    "topk_accuracy": ".metrics",
    "train": ".loop",
    "write_predictions": ".evaluate",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


# mbt.train(preset=..., set=[...], run_dir=...): the `mbt train` verb
callable_module(__name__, "mbt.train.launch:train")
