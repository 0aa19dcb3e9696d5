"""One version: the wheel's (pyproject reads `mbt.__version__`), `mbt --version`, the
`mbt_version` of saved models, and the newest entry of CHANGELOG.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib

import mbt
from mbt.cli import main

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_everywhere(tmp_path, capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mbt.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", mbt.__version__)
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"mbt {mbt.__version__}"
    mbt.MBT(tiny_config()).save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["mbt_version"] == mbt.__version__
    versions = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert versions[0] == mbt.__version__ and len(versions) == len(set(versions))
