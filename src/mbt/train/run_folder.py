"""The run folder: where a training run keeps its config, log, metrics, checkpoints and models;
`run_lock`, which keeps a second run from writing into it at the same time; and which of its
weights to use: `best` (the validation-chosen model, the default when the run kept one),
`final`, or `latest` (the newest training checkpoint, verified; the previous one when it is
damaged)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from .loggers import Sink, open_sinks, plot_curves, scalars

log = logging.getLogger("mbt.train")


LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live run holds the run folder's lock; the message names it (pid, host, start time)."""


_held_lock_fd: int | None = None
"""The descriptor of the lock this process holds, closed in forked children (loader workers): a
`flock` lives as long as any copy of its descriptor, so an orphaned worker of a killed run would
otherwise keep the folder locked against the restart."""


def _close_lock_in_child() -> None:
    global _held_lock_fd
    if _held_lock_fd is not None:
        os.close(_held_lock_fd)  # the parent's copy keeps the lock
        _held_lock_fd = None


os.register_at_fork(after_in_child=_close_lock_in_child)


@contextmanager
def run_lock(root: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold `root/run.lock` while a run writes to `root` (the main process only: `enabled`).

    The lock is an exclusive `flock` on the file, which the kernel releases when its process
    ends in any way (SIGKILL, a node reboot for NFS); the file records the holder (pid, host,
    start time, command) for the error a second run gets at once (`RunLockedError`). A lock left
    by a run that was killed is therefore free: it is taken over, with its holder named in the
    log, so `--resume` after a crash or a requeue just works. On release the file is emptied (it
    is never removed: a run that opened it in the meantime must not lock a deleted file). File
    systems without `flock` across machines (Lustre without `-o flock`) cannot see a run on
    another machine. Forked processes (loader workers) do not inherit it."""
    global _held_lock_fd
    if not enabled:
        yield
        return
    import fcntl

    path = Path(root) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"{Path(root)}: another run is writing to this run folder ({_holder(fd)}); wait for "
                                 f"it to end or choose another run folder") from None
        previous = _holder(fd)
        if previous != "holder unknown":
            log.warning("%s: taking over the lock of a run that ended without releasing it (%s)", root, previous)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        _held_lock_fd = fd
        try:
            yield
        finally:
            _held_lock_fd = None
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    """Who the lock file names, in words."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info.get('command', '')}".strip()
    except (ValueError, TypeError, KeyError):
        return "holder unknown"


class RunFolder:
    """Paths of a run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.log = self.root / "log.txt"
        self.rank_logs = self.root / "logs"
        self.metrics = self.root / "metrics.jsonl"
        self.tensorboard = self.root / "tb"
        self.curves = self.root / "curves.png"
        self.checkpoints = self.root / "checkpoints"
        self.latest = self.checkpoints / LATEST
        self.best = self.root / "best"
        self.final = self.root / "final"
        self.results = self.root / "results.json"
        self.lock = self.root / LOCK_NAME

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
