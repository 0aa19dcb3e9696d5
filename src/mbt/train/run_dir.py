"""Which weights of a run folder to use: `best` (the validation-chosen model, the default
when the run kept one), `final`, or `latest` (the newest training checkpoint, verified; the
previous one when it is damaged)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from ..models.config import ConfigError

Weights = Literal["best", "final", "latest"]
WEIGHTS: tuple[str, ...] = ("best", "final", "latest")


def resolve_weights(run_dir: str | os.PathLike, which: Weights | None = None) -> tuple[Weights, Path]:
    """(choice, path): a save_pretrained folder for best/final, the checkpoint file for latest."""
    run_dir = Path(run_dir)
    if which is None:
        which = "best" if (run_dir / "best" / "config.json").is_file() else "final"
    if which not in WEIGHTS:
        raise ConfigError(f"weights: expected one of {list(WEIGHTS)}, got {which!r}")
    if which == "latest":
        from .checkpoint import LATEST, PREVIOUS

        path = run_dir / "checkpoints" / LATEST
        if not path.is_file() and path.with_name(PREVIOUS).is_file():  # killed between a save's renames
            path = path.with_name(PREVIOUS)
    else:
        path = run_dir / which
    if not (path.is_file() if which == "latest" else (path / "config.json").is_file()):
        raise FileNotFoundError(f"{run_dir}: no {which} weights (no {path})")
    return which, path


def load_run_weights(
    run_dir: str | os.PathLike, which: Weights | None = None, model_config: Any = None
) -> tuple[Weights, Any]:
    """(choice, model) of a run folder; `latest` builds the model from `model_config`."""
    from ..models.mbt import MBT

    choice, path = resolve_weights(run_dir, which)
    if choice == "latest":
        from .checkpoint import load_model_weights, load_resume_checkpoint

        model = MBT(model_config)  # latest.pt, or previous.pt when latest is damaged (said in the log)
        load_model_weights(model, load_resume_checkpoint(path.parent)[0], path.parent)  # or its FSDP shards
        return choice, model
    return choice, MBT.from_pretrained(path)


def weights_chosen_on(target: str | os.PathLike, which: Weights | None = None) -> str:
    """What chose the weights of a run folder (`which` of it) or a model folder, as recorded
    with them (`best` models of a run record their validation metric)."""
    from ..models.pretrained import read_config

    target = Path(target)
    if (target / "config.yaml").is_file():
        choice, target = resolve_weights(target, which)
        if choice != "best":
            return f"nothing: the {choice} weights of the run"
    return read_config(target).get("weights_chosen_on") or "not recorded with these weights"
