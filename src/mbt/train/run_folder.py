"""The run folder: where a training run keeps its config, log, metrics, checkpoints and models."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .checkpoint import LATEST
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
