"""Runs you can watch: curves.png redrawn in the run folder from metrics.jsonl, TensorBoard
events, and the optional `train.loggers` (csv, tensorboard, wandb, mlflow; offline)."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from mbt.cli import main
from mbt.models.config import ConfigError
from mbt.train.loggers import plot_curves, read_metrics
from mbt.train.loop import train
from mbt.train.run_folder import MetricsLog, RunFolder

from .tiny_experiment import tiny_config, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_curves_are_drawn_while_training(tmp_path, monkeypatch):
    """curves.png appears at the first evaluation, before the run ends, and is redrawn with
    each one, and from training records at most once a minute: a run can be watched from its folder."""
    folder = RunFolder(tmp_path)
    log = MetricsLog(folder, enabled=True)
    log.write("train", 5, {"loss": 1.2, "lr": 0.1, "grad_norm": 3.0, "epoch": 0.5})
    assert not folder.curves.exists()  # not yet a minute
    log.write("val", 5, {"top1": 0.5, "loss": 0.9, "names": ["a"], "nan": float("nan")})
    assert folder.curves.is_file()  # every evaluation draws
    first = folder.curves.stat().st_mtime_ns
    log.write("train", 10, {"loss": 1.0, "lr": 0.2, "epoch": 1.0})
    assert folder.curves.stat().st_mtime_ns == first
    monkeypatch.setattr(MetricsLog, "DRAW_EVERY_S", 0.0)  # a minute later
    log.write("train", 15, {"loss": 0.8, "lr": 0.2, "epoch": 1.5})
    assert folder.curves.stat().st_mtime_ns > first
    log.close()
    import matplotlib.image

    picture = matplotlib.image.imread(folder.curves)
    assert picture.shape[0] > 200 and picture.shape[1] > 600  # loss, lr, top1 and val loss panels


def test_curves_from_a_damaged_log(tmp_path):
    """A metrics.jsonl whose last line was cut by a crash still draws (that line left out)."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"split": "train", "step": 1, "loss": 2.0, "lr": 0.1}\n{"split": "val", "st')
    assert len(read_metrics(path)) == 1
    assert plot_curves(path, tmp_path / "c.png").stat().st_size > 1000


def test_training_writes_curves_csv_and_tensorboard(tmp_path):
    cfg = tiny_config("train.epochs=2", "train.log_every=2", "dataset.synthetic_items=16",
                      "train.loggers=[csv, tensorboard]")
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    records = read_metrics(run / "metrics.jsonl")
    assert (run / "curves.png").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    logged = {(r["split"], int(r["step"]), r["metric"]): float(r["value"]) for r in rows}
    checked = 0
    for record in records:
        for key in ("loss", "lr", "mAP"):
            if key in record:
                assert logged[(record["split"], record["step"], key)] == pytest.approx(record[key])
                checked += 1
    assert checked >= 6  # train loss/lr at two steps, val and test mAP and loss
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in records if r["split"] == "train"])
    assert "val/mAP" in events.Tags()["scalars"]


def test_wandb_and_mlflow_offline(tmp_path, monkeypatch):
    """The W&B run (offline: no account, files in the run folder) and the MLflow run (a file
    store in the run folder) get the records, MLflow names cleaned of '@', the config as params."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    log = MetricsLog(folder, True, ["wandb", "mlflow"], tiny_config().to_dict())
    log.write("train", 2, {"loss": 1.5, "lr": 0.1})
    log.write("val", 2, {"top1": 0.25, "prec@1": 0.5, "names": ["x"]})
    log.close()
    assert list((folder.root / "wandb").glob("offline-run-*/run-*.wandb"))
    import mlflow

    mlflow.set_tracking_uri((folder.root / "mlruns").resolve().as_uri())
    (found,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert found.data.metrics == {"train/loss": 1.5, "train/lr": 0.1, "val/top1": 0.25, "val/prec_1": 0.5}
    assert found.data.params["train.lr"] == "0.1" and found.info.run_name == "run"


def test_missing_logger_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = write_config(tiny_config("train.loggers=[wandb]"), tmp_path / "c.yaml")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "mbt train: error: train.loggers: 'wandb' needs the wandb package: pip install 'mbt[wandb]'"
    with pytest.raises(ConfigError, match=r"loggers: unknown \['comet'\]"):
        tiny_config("train.loggers=[csv, comet]")
