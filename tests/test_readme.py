"""The README's code blocks work as written: every ```bash and ```python block (those not
marked `notest`, which need downloads or real datasets) runs, in order, in a folder holding
the files the README assumes (a small `my_videos/` folder, a Scenic checkpoint)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mbt.demo.synth import SynthConfig, _picture, _sound, write_clip

from .conftest import ASSETS

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    found = []
    for lang, flags, body in BLOCK.findall(README.read_text()):
        if lang in ("bash", "python") and "notest" not in flags:
            found.append((lang, body))
    return found


def test_readme_has_the_two_commands_first():
    first = BLOCK.findall(README.read_text())[:2]
    assert [lang for lang, _, _ in first] == ["sh", "sh"]
    assert "mbt demo" in first[0][2] and "pytest" in first[1][2]
    ci = (README.parent / ".ci" / "run").read_text()
    assert first[1][2].strip().split("&& ")[-1] in ci  # CI runs the README's test command


def _videos(root: Path) -> None:
    cfg = SynthConfig()
    for split, count in (("train", 4), ("test", 2)):
        for c, name in enumerate(("dog", "rain", "siren")):
            folder = root / "my_videos" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng([c, i, split == "test"])
                write_clip(folder / f"clip_{i + 1:04d}.mp4", _picture(rng, c, cfg), _sound(rng, c, cfg), cfg.fps,
                           cfg.sample_rate)


@pytest.mark.slow
def test_readme_blocks_run(tmp_path, monkeypatch):
    _videos(tmp_path)
    parity = Path(ASSETS) / "parity" / "b_token_bottleneck"
    shutil.copy(parity / "scenic_checkpoint_legacy" / "checkpoint_5000", tmp_path / "checkpoint_5000")
    (tmp_path / "model.json").write_text(json.dumps(json.loads((parity / "config.json").read_text())["mbt_kwargs"]))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MBT_CACHE": str(tmp_path / "cache")}
    monkeypatch.chdir(tmp_path)
    runnable = blocks()
    assert len(runnable) >= 4
    for lang, body in runnable:
        if lang == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"README block failed:\n{body}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        else:
            exec(compile(body, "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "runs" / "quick" / "final" / "config.json").is_file()
    assert (tmp_path / "pictures" / "video_attention.png").is_file()
    assert (tmp_path / "converted" / "model.safetensors").is_file()


DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]
SEPARATORS = ("&&", "||", ";", "|")


def _mbt_argvs(words: list[str]) -> list[list[str]]:
    """The arguments of each `mbt ...` / `python -m mbt.cli ...` call in a shell command's words,
    also inside a quoted `bash -c '...'` string."""
    import shlex

    found = []
    for i, word in enumerate(words):
        if " " in word:
            found += _mbt_argvs(shlex.split(word, comments=True))
        start = i + 1 if word == "mbt" else i + 2 if word == "-m" and words[i + 1:i + 2] == ["mbt.cli"] else None
        if start is not None and (i == 0 or words[i - 1] not in ("install", "-e")):
            end = next((j for j in range(start, len(words)) if words[j] in SEPARATORS), len(words))
            found.append(words[start:end])
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `mbt ...` command of every shell block in the README and docs/ (those marked
    `notest` included), as (file, argv): continuation lines joined, comments dropped."""
    import shlex

    found = []
    for doc in DOCS:
        for lang, _, body in BLOCK.findall(doc.read_text()):
            if lang not in ("bash", "sh"):
                continue
            pending = ""
            for line in body.replace("\\\n", " ").splitlines():
                pending += line + "\n"
                try:
                    words = shlex.split(pending, comments=True)
                except ValueError:  # a quote open across lines
                    continue
                pending = ""
                found += [(doc.name, argv) for argv in _mbt_argvs(words)]
    return found


def test_every_documented_command_parses_and_resolves(tmp_path, monkeypatch, capsys):
    """Commands that need downloads, GPUs or real datasets (not run by `test_readme_blocks_run`)
    still hold only options that exist, and a `train` command's config resolves (presets, --set
    fields and values): `mbt train ... --print-config` prints it without reading data."""
    from mbt.cli import build_parser
    from mbt.cli.train import resolve_config

    commands = documented_commands()
    assert len(commands) >= 20 and {doc for doc, _ in commands} >= {"README.md", "benchmarks.md", "scaling.md"}
    parser = build_parser()
    for doc, argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{doc}: `mbt {' '.join(argv)}` does not parse: {capsys.readouterr().err}") from e
        if args.command == "train" and not args.resume and not args.list_presets:
            resolve_config(args)


def test_readme_paper_command_on_a_class_folder(tmp_path, monkeypatch, capsys):
    """The README's paper-size command on a folder of videos: the AudioSet preset's class list is
    dropped with a note, the printed config is the one the run uses (3 classes from the folders),
    and a folder too small for the 5% hold-out gets a message saying how to hold out validation."""
    from mbt.cli import main
    from mbt.models.config import ConfigError
    from mbt.train.data import load_split_annotations

    (command,) = [argv for doc, argv in documented_commands() if "--preset" in argv and "dataset.format=folder" in argv]
    for split, count in (("train", 4), ("test", 1)):
        for name in ("dog", "rain", "siren"):
            for i in range(count):
                (tmp_path / "my_videos" / split / name).mkdir(parents=True, exist_ok=True)
                (tmp_path / "my_videos" / split / name / f"clip_{i}.mp4").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="audioset fields of 'audioset-mini' are dropped: classes="):
        assert main([*command, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "model.num_classes: 527 -> 3 (from the training annotations)" in out
    import yaml

    printed = yaml.safe_load(out)
    assert printed["model"]["num_classes"] == 3 and printed["dataset"]["classes"] is None
    assert printed["model"]["label_names"] == ["dog", "rain", "siren"]
    from mbt.cli import build_parser
    from mbt.cli.train import resolve_config

    with pytest.warns(UserWarning):
        cfg = resolve_config(build_parser().parse_args(command))
    with pytest.raises(ConfigError, match=r"holds none of the 12 training videos .*dataset\.val_fraction=0\.25"):
        load_split_annotations(cfg, "val")
    assert len(load_split_annotations(cfg.override(["dataset.val_fraction=0.5"]), "val").items) > 0


def test_readme_points_inside_the_repository():
    """No command of the README reaches outside the repository (../shared is not in a clone)."""
    for doc in DOCS:
        assert "../" not in "".join(body for _, _, body in BLOCK.findall(doc.read_text())), doc
        assert "../shared" not in doc.read_text(), doc
