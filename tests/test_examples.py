"""examples/ works as written: the own-videos script runs end to end on generated videos (split,
summary, train, eval, predict, export), the fine-tuning script continues from its run on new
classes, and every `mbt` command of every example parses with
a config that resolves."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mbt.demo.synth import SynthConfig, _picture, _sound, write_clip

from .test_readme import _mbt_argvs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _commands(script: Path) -> list[list[str]]:
    """The `mbt` calls of a shell script, shell variables replaced by sample values."""
    text = script.read_text().replace("\\\n", " ")
    values = {"$run": "runs/x", "$videos": "videos", "$base": "runs/base", "${EPOCHS:-10}": "10",
              "${EPOCHS:-5}": "5", "${VAL_FRACTION:-0.2}": "0.2", "${BATCH_SIZE:-8}": "8",
              "$here": "examples", "$nproc": "2", '"${nodes[@]}"': "--standalone",
              "$NNODES": "2", "$NODE_RANK": "0", "$MASTER": "host0", "${PRESET:-audioset-mini}": "audioset-mini",
              "${RUN_DIR:-runs/my-videos-ddp}": "runs/ddp", '"$@"': ""}
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for key, value in values.items():
            line = line.replace(key, value)
        try:
            found += _mbt_argvs(shlex.split(line, comments=True))
        except ValueError:
            continue
    return found


def test_every_example_command_parses_and_resolves():
    from mbt.cli import build_parser
    from mbt.cli.train import resolve_config

    scripts = sorted(EXAMPLES.glob("*/*.sh"))
    assert {s.parent.name for s in scripts} == {"own_videos", "fine_tune", "multi_gpu"}
    parser = build_parser()
    verbs = set()
    for script in scripts:
        commands = _commands(script)
        assert commands, script
        for argv in commands:
            args = parser.parse_args(argv)
            verbs.add(args.command)
            if args.command == "train":
                cfg = resolve_config(args)
                assert cfg.dataset.format == "folder" and cfg.dataset.val_fraction > 0
    assert verbs >= {"data", "train", "eval", "predict", "export"}


def _all_videos(root: Path) -> None:
    cfg = SynthConfig()
    for c, name in enumerate(("dog", "rain", "siren")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            rng = np.random.default_rng([c, i, 7])
            write_clip(root / name / f"{i:04d}.mp4", _picture(rng, c, cfg), _sound(rng, c, cfg), cfg.fps,
                       cfg.sample_rate)


@pytest.mark.slow
def test_own_videos_example_runs(tmp_path):
    _all_videos(tmp_path / "all_videos")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "EPOCHS": "2",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(EXAMPLES / "own_videos" / "run.sh"), "all_videos"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "my-videos"
    assert len(list((tmp_path / "my_videos" / "test").glob("*/*"))) + len(
        list((tmp_path / "my_videos" / "train").glob("*/*"))) == 18
    assert (run / "curves.png").is_file() and (run / "metrics.csv").is_file()
    report = json.loads(next((run / "eval").glob("test-*/metrics.json")).read_text())
    assert report["num_videos"] == len(list((tmp_path / "my_videos" / "test").glob("*/*")))
    assert (run / "model.onnx").stat().st_size > 10_000
    assert done.stdout.count("[1 clip(s), spectrogram+rgb]") == report["num_videos"]  # one prediction per video

    # examples/fine_tune: the trained run on new classes (two of the three), as written
    for name in ("dog", "rain"):  # every video of the two classes for training (0.2 held out), the test split's to test
        shutil.copytree(tmp_path / "all_videos" / name, tmp_path / "new_videos" / "train" / name)
        shutil.copytree(tmp_path / "my_videos" / "test" / name, tmp_path / "new_videos" / "test" / name)
    done = subprocess.run(["bash", str(EXAMPLES / "fine_tune" / "run.sh"), "runs/my-videos", "new_videos"],
                          cwd=tmp_path, env={**env, "VAL_FRACTION": "0.5", "BATCH_SIZE": "4"}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    tuned = tmp_path / "runs" / "fine-tuned"
    log = (tuned / "log.txt").read_text()
    assert "initialised from runs/my-videos" in log and "'head': 're-initialised" in log
    assert json.loads((tuned / "final" / "config.json").read_text())["model"]["num_classes"] == 2
    assert json.loads(next((tuned / "eval").glob("test-*/metrics.json")).read_text())["num_videos"] == len(
        list((tmp_path / "new_videos" / "test").glob("*/*")))


@pytest.mark.slow
def test_multi_gpu_launch_runs_two_processes(tmp_path):
    """The launch script as written, with two CPU processes (gloo) and the tiny model: both
    processes train one run; the results say two processes shared the global batch."""
    _all_videos(tmp_path / "all_videos")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PRESET": "tiny", "NPROC": "2", "RUN_DIR": "runs/ddp"}
    split = subprocess.run([sys.executable, str(EXAMPLES / "own_videos" / "split.py"), "all_videos", "my_videos"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert split.returncode == 0, split.stderr
    done = subprocess.run(["bash", str(EXAMPLES / "multi_gpu" / "launch.sh"), "my_videos", "train.device=cpu",
                           "train.batch_size=4", "train.epochs=1", "train.num_workers=0", "dataset.val_fraction=0.3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    log = (tmp_path / "runs" / "ddp" / "log.txt").read_text()
    assert "= 2 processes x 1 accumulation x 2" in log
    assert json.loads((tmp_path / "runs" / "ddp" / "results.json").read_text())["steps"] >= 1
