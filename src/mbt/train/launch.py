"""`mbt.train(...)`: a run from the same inputs as `mbt train` (preset, config file, `set`
overrides, `resume`), resolved in the one order the command line uses."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import ExperimentConfig


def resolve_experiment(preset: str | None = None, config: ExperimentConfig | str | os.PathLike | None = None,
                       set: Sequence[str] = (), resume: str | os.PathLike | None = None) -> ExperimentConfig:
    """Preset (or the defaults) <- config (an `ExperimentConfig`, or a YAML/JSON file) <- `set`
    (`section.field=value`); with `resume` (a run folder), its saved config <- `set`; with
    `resume='auto'`, the same as without (the run folder is `train`'s `run_dir`)."""
    from .presets import preset as preset_config

    if resume and resume != "auto":
        if preset or config is not None:
            raise ConfigError("--resume takes the config saved in the run folder; drop --preset/--config")
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{resume}: not a run folder (no config.yaml)")
        cfg = ExperimentConfig.load(saved)
    elif isinstance(config, ExperimentConfig):
        if preset:
            raise ConfigError("give a preset or a ready ExperimentConfig, not both")
        cfg = config
    else:
        cfg = preset_config(preset) if preset else ExperimentConfig()
        if config is not None:
            cfg = ExperimentConfig.load(config, cfg)
    return cfg.override(list(set)) if set else cfg


def train(config: ExperimentConfig | str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
          *, preset: str | None = None, set: Sequence[str] = (), resume: str | os.PathLike | None = None,
          progress: bool = True, datasets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train as `mbt train` does and return results.json's content: `config` is an
    `ExperimentConfig` or a config file (`--config`), on top of `preset` (`--preset`), with
    `set` overrides (`--set`); `run_dir` (`--run-dir`, default runs/<name>-<time>); `resume` a
    run folder to continue (`--resume`), or 'auto': start `run_dir`, or continue it when it holds a
    checkpoint (torchrun restarts, requeued jobs). `datasets`: ready-made datasets (see
    `mbt.train.loop.train`)."""
    from .loop import train as run

    cfg = resolve_experiment(preset, config, set, resume)
    if resume == "auto":
        if not run_dir:
            raise ConfigError("--resume auto needs --run-dir: the folder to start, or continue, the run in")
        return run(cfg, run_dir, resume="auto", progress=progress, datasets=datasets)
    return run(cfg, resume or run_dir, resume=bool(resume), progress=progress, datasets=datasets)
