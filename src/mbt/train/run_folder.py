"""The run folder: where a training run keeps its config, log, metrics, checkpoints and models,
and which of its weights to use: `best` (the validation-chosen model, the default when the run
kept one), `final`, or `latest` (the newest training checkpoint, verified; the previous one
when it is damaged)."""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.mbt import MBT
from ..models.pretrained import read_config
from .checkpoint import LATEST, PREVIOUS, load_model_weights, load_resume_checkpoint
from .distributed import Dist
from .evaluate import json_safe

log = logging.getLogger("mbt.train")


class RunFolder:
    """Paths of a run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.log = self.root / "log.txt"
        self.rank_logs = self.root / "logs"
        self.metrics = self.root / "metrics.jsonl"
        self.tensorboard = self.root / "tb"
        self.checkpoints = self.root / "checkpoints"
        self.latest = self.checkpoints / LATEST
        self.best = self.root / "best"
        self.final = self.root / "final"
        self.results = self.root / "results.json"

    def eval_dir(self, split: str) -> Path:
        return self.root / "eval" / split


class MetricsLog:
    """Appends records to metrics.jsonl and, when available, TensorBoard (main process only)."""

    def __init__(self, folder: RunFolder, enabled: bool) -> None:
        self.path, self.enabled, self.writer = folder.metrics, enabled, None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder.tensorboard))
        except ImportError:
            log.info("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, split: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"split": split, "step": step, **json_safe(values)}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{split}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def setup_logging(folder: RunFolder, d: Dist) -> None:
    """Log to stderr (through tqdm, so bars stay intact; other ranks: warnings only) and to
    log.txt from rank 0; with several processes, each also to its own logs/rank<R>.txt."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")

    class _TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record))

    console = _TqdmHandler(logging.INFO if d.is_main else logging.WARNING)
    console.setFormatter(fmt)
    log.addHandler(console)
    files = [folder.log] if d.is_main else []
    if d.enabled:
        folder.rank_logs.mkdir(parents=True, exist_ok=True)
        files.append(folder.rank_logs / f"rank{d.rank}.txt")
    for path in files:
        file = logging.FileHandler(path)
        file.setFormatter(fmt)
        log.addHandler(file)


def default_run_dir(name: str) -> Path:
    """runs/<name>-<date>-<time>."""
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


Weights = Literal["best", "final", "latest"]
WEIGHTS: tuple[str, ...] = ("best", "final", "latest")


def resolve_weights(run_dir: str | os.PathLike, which: Weights | None = None) -> tuple[Weights, Path]:
    """(choice, path): a save_pretrained folder for best/final, the checkpoint file for latest."""
    folder = RunFolder(run_dir)
    if which is None:
        which = "best" if (folder.best / "config.json").is_file() else "final"
    if which not in WEIGHTS:
        raise ConfigError(f"weights: expected one of {list(WEIGHTS)}, got {which!r}")
    if which == "latest":
        path = folder.latest
        if not path.is_file() and path.with_name(PREVIOUS).is_file():  # killed between a save's renames
            path = path.with_name(PREVIOUS)
    else:
        path = folder.best if which == "best" else folder.final
    if not (path.is_file() if which == "latest" else (path / "config.json").is_file()):
        raise FileNotFoundError(f"{folder.root}: no {which} weights (no {path})")
    return which, path


def load_run_weights(
    run_dir: str | os.PathLike, which: Weights | None = None, model_config: Any = None
) -> tuple[Weights, MBT]:
    """(choice, model) of a run folder; `latest` builds the model from `model_config`."""
    choice, path = resolve_weights(run_dir, which)
    if choice == "latest":
        model = MBT(model_config)  # latest.pt, or previous.pt when latest is damaged (said in the log)
        load_model_weights(model, load_resume_checkpoint(path.parent)[0], path.parent)  # or its FSDP shards
        return choice, model
    return choice, MBT.from_pretrained(path)


def weights_chosen_on(target: str | os.PathLike, which: Weights | None = None) -> str:
    """What chose the weights of a run folder (`which` of it) or a model folder, as recorded
    with them (`best` models of a run record their validation metric)."""
    target = Path(target)
    if (target / "config.yaml").is_file():
        choice, target = resolve_weights(target, which)
        if choice != "best":
            return f"nothing: the {choice} weights of the run"
    return read_config(target).get("weights_chosen_on") or "not recorded with these weights"
