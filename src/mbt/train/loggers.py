"""Where a run's metrics go besides `metrics.jsonl`: curves drawn into the run folder, and the
loggers of `train.loggers` ('csv', 'tensorboard', 'wandb', 'mlflow').

`metrics.jsonl` stays the record every other output is made from; `curves.png` is redrawn
from it while the run goes (training loss, learning rate, each validation metric), so a run
can be watched by opening one picture. The loggers receive the same records as they are
written. 'tensorboard', 'wandb' and 'mlflow' are optional packages: asking for one that is
not installed is an error naming the extra to install, before training starts.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError
from ..io import atomic_write

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
"""The values `train.loggers` takes."""

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""Logger -> the package it needs, which is also the name of mbt's extra that installs it."""

PLOTTED = ("loss", "lr")
"""Training-record keys drawn in `curves.png` (with every numeric validation metric)."""


class Sink(Protocol):
    def write(self, split: str, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def check_loggers(names: Sequence[str]) -> None:
    """Refuse an unknown logger, or one whose package is missing, in one line."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"train.loggers: unknown logger {name!r}; expected some of {list(LOGGERS)}")
        package = _PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"train.loggers: {name!r} needs the {package} package: pip install 'mbt[{name}]'")


def scalars(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record (loggers take no lists, strings or NaN)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class CsvSink:
    """`metrics.csv`: one row per (split, step, metric, value), readable by any spreadsheet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(["split", "step", "metric", "value"])

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerows([split, step, k, repr(v)] for k, v in values.items())

    def close(self) -> None:
        pass


class TensorBoardSink:
    """TensorBoard events under `tb/`, scalars named `split/metric`."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{split}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A Weights & Biases run named after the run folder, files kept in it (`WANDB_MODE=offline`
    works without an account; `WANDB_PROJECT` picks the project, default 'mbt')."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mbt"), name=root.name, dir=str(root),
                              config=config, reinit=True)

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        self.run.log({f"{split}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """An MLflow run named after the run folder, the config flattened into its parameters; the
    tracking URI is MLflow's (`MLFLOW_TRACKING_URI`), else `mlruns/` in the run folder (MLflow's
    file store, which it keeps in maintenance mode but still reads: `mlflow ui --backend-store-uri`)."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):  # no server: files in the run folder, no database needed
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((root / "mlruns").resolve().as_uri())
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=root.name)
        params = {k: v for k, v in _flat(config).items() if not k.endswith("label_names")}
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        # MLflow names take letters, digits and _-. :/ only ('prec@1' -> 'prec_1')
        self.mlflow.log_metrics({re.sub(r"[^\w\-. :/]", "_", f"{split}/{k}"): v for k, v in values.items()},
                                step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def open_sinks(names: Sequence[str], root: Path, tensorboard_dir: Path, config: dict[str, Any]) -> list[Sink]:
    """The loggers named (checked first: a missing package stops the run before it starts)."""
    check_loggers(names)
    sinks: list[Sink] = []
    for name in dict.fromkeys(names):
        if name == "csv":
            sinks.append(CsvSink(root / "metrics.csv"))
        elif name == "tensorboard":
            sinks.append(TensorBoardSink(tensorboard_dir))
        elif name == "wandb":
            sinks.append(WandbSink(root, config))
        else:
            sinks.append(MlflowSink(root, config))
    return sinks


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` (a line cut short by a crash is left out)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_curves(metrics: str | os.PathLike, out: str | os.PathLike) -> Path:
    """`curves.png` from a run's `metrics.jsonl`: training loss, learning rate, and one panel per
    numeric validation metric (test points marked), against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics)
    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") in ("val", "test")]
    skip = {"split", "step", "num_examples", "num_views", "epoch"}
    val_keys = list(dict.fromkeys(k for r in evals for k, v in scalars(r).items() if k not in skip))
    panels = [(k, "train") for k in PLOTTED if any(k in r for r in train)] + [(k, "eval") for k in val_keys]
    panels = panels or [("loss", "train")]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, kind) in zip(axes.flat, panels, strict=False):
        if kind == "train":
            points = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
            ax.plot(*zip(*points, strict=True), lw=1.2) if points else None
            ax.set_title("learning rate" if key == "lr" else f"training {key}", fontsize=10)
        else:
            for split, style in (("val", "-o"), ("test", "s")):
                points = [(r["step"], r[key]) for r in evals
                          if r["split"] == split and isinstance(r.get(key), (int, float))]
                if points:
                    ax.plot(*zip(*points, strict=True), style, ms=4, lw=1.2, label=split)
            ax.set_title(key, fontsize=10)
            ax.legend(fontsize=8)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    out = Path(out)
    try:  # atomically: a viewer never sees half a picture
        atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return out
