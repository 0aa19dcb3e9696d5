"""Training and evaluation: the paper's recipes as presets, the official losses, mixup and
schedule, metrics, a resumable DDP training loop and multi-clip evaluation.

    from mbt.train import preset, train
    cfg = preset("audioset-mini").override(["dataset.root=/data/as", "train.num_workers=8"])
    results = train(cfg, "runs/as-mini")
"""

from .._lazy import callable_module, lazy_exports

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
