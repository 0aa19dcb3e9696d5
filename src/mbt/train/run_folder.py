"""The run folder: where a training run keeps its config, log, metrics, checkpoints and models."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .checkpoint import LATEST
from .distributed import Dist
from .evaluate import json_safe
from .loggers import Sink, open_sinks, plot_curves, scalars

log = logging.getLogger("mbt.train")


class RunFolder:
    """Paths of a run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.log = self.root / "log.txt"
        self.metrics = self.root / "metrics.jsonl"
        self.tensorboard = self.root / "tb"
        self.curves = self.root / "curves.png"
        self.checkpoints = self.root / "checkpoints"
        self.latest = self.checkpoints / LATEST
        self.best = self.root / "best"
        self.final = self.root / "final"
        self.results = self.root / "results.json"

    def eval_dir(self, split: str) -> Path:
        return self.root / "eval" / split


class MetricsLog:
    """Appends records to metrics.jsonl, redraws curves.png from it (at every evaluation, and at
    most once a minute from training records) and passes them to the loggers of
    `train.loggers` (TensorBoard also unasked when it is installed); main process only."""

    DRAW_EVERY_S = 60.0

    def __init__(self, folder: RunFolder, enabled: bool, loggers: Sequence[str] = (),
                 config: dict[str, Any] | None = None) -> None:
        self.path, self.curves, self.enabled = folder.metrics, folder.curves, enabled
        self.sinks: list[Sink] = []
        self.drawn = time.monotonic()  # the first picture at the first evaluation, or a minute in
        if not enabled:
            return
        names = list(loggers)
        if "tensorboard" not in names and importlib.util.find_spec("tensorboard") is not None:
            names.append("tensorboard")
        self.sinks = open_sinks(names, folder.root, folder.tensorboard, config or {})

    def write(self, split: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"split": split, "step": step, **json_safe(values)}) + "\n")
        numbers = scalars(values)
        for sink in self.sinks:
            sink.write(split, step, numbers)
        if split != "train" or time.monotonic() - self.drawn >= self.DRAW_EVERY_S:
            self.draw()

    def draw(self) -> None:
        """Redraw curves.png; a failure is logged, never stops training."""
        self.drawn = time.monotonic()
        try:
            plot_curves(self.path, self.curves)
        except (OSError, ValueError, RuntimeError) as e:
            log.warning("could not draw %s: %s", self.curves, e)

    def close(self) -> None:
        if self.enabled and self.path.exists():
            self.draw()
        for sink in self.sinks:
            sink.close()


def setup_logging(folder: RunFolder, d: Dist) -> None:
    """Log to stderr (through tqdm, so bars stay intact) and to log.txt, from rank 0 only."""
    log.setLevel(logging.INFO if d.is_main else logging.WARNING)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")

    class _TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record))

    console = _TqdmHandler()
    console.setFormatter(fmt)
    log.addHandler(console)
    if d.is_main:
        file = logging.FileHandler(folder.log)
        file.setFormatter(fmt)
        log.addHandler(file)


def default_run_dir(name: str) -> Path:
    """runs/<name>-<date>-<time>."""
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
