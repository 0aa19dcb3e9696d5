"""Type checkers and editors see the public API: the lazy exports of each package are also
imported under `if TYPE_CHECKING:` (which never runs, so `import mbt` stays light), and mypy
resolves `mbt.MBT` and the rest to their classes and functions, not to `Any`."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAZY_PACKAGES = sorted(p for p in (SRC / "mbt").rglob("__init__.py") if "lazy_exports(" in p.read_text())


def _static_exports(init: Path) -> dict[str, str]:
    """{name: module as written} of the imports under `if TYPE_CHECKING:` in `init`."""
    found = {}
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    found.update({a.asname or a.name: "." * imp.level + (imp.module or "") for a in imp.names})
    return found


@pytest.mark.parametrize("init", LAZY_PACKAGES, ids=lambda p: p.parent.relative_to(SRC).as_posix())
def test_every_lazy_export_is_imported_statically_for_type_checkers(init):
    package = ".".join(init.parent.relative_to(SRC).parts)
    lazy = importlib.import_module(package)._EXPORTS
    static = _static_exports(init)
    def same(name: str, module: str) -> bool:  # `from .m import name`, or the submodule: `from . import m`
        found = static.get(name)
        return found is not None and module in (found, found + name if found.endswith(".") else f"{found}.{name}")

    missing = {name: module for name, module in lazy.items() if not same(name, module)}
    assert not missing, (f"{init.relative_to(SRC)}: add under `if TYPE_CHECKING:` "
                         + "; ".join(f"from {m} import {n} as {n}" for n, m in missing.items()))


USES = """
import mbt
import mbt.data
import mbt.models
import mbt.train

model = mbt.MBT(mbt.MBTConfig(num_classes=3))
reveal_type(model)
reveal_type(model.config.num_classes)
reveal_type(mbt.load_pretrained)
reveal_type(mbt.predict)
reveal_type(mbt.ConfigError)
reveal_type(mbt.models.fusion_variant)
reveal_type(mbt.data.DataConfig().num_frames)
reveal_type(mbt.data.load_annotations)
reveal_type(mbt.train.preset("tiny"))
reveal_type(mbt.train.train)
"""
EXPECTED = [  # what each reveal_type must show (mypy 1.x writes builtins.int, 2.x int)
    r"^mbt\.models\.mbt\.MBT$", r"^(builtins\.)?int$", r"-> mbt\.models\.mbt\.MBT$",
    r"-> .*list\[mbt\.inference\.Prediction\]$",
    r"-> mbt\.errors\.ConfigError$", r"-> mbt\.models\.config\.MBTConfig$", r"^(builtins\.)?int$",
    r"-> mbt\.data\.annotations\.base\.Annotations$", r"^mbt\.train\.config\.ExperimentConfig$",
    r"^def \(cfg: mbt\.train\.config\.ExperimentConfig,",
]


def test_mypy_resolves_the_public_api(tmp_path):
    (tmp_path / "uses.py").write_text(USES)
    # mbt's own modules are read (their errors not reported); third-party ones are not (torch: minutes)
    (tmp_path / "mypy.ini").write_text(
        f"[mypy]\nmypy_path = {SRC}\nfollow_imports = skip\nignore_missing_imports = True\n"
        "[mypy-mbt.*]\nfollow_imports = silent\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"), "--cache-dir",
         str(tmp_path / "cache"), "--no-error-summary", "--hide-error-context", str(tmp_path / "uses.py")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MYPYPATH": str(SRC)},
    )
    revealed = [line.split("Revealed type is ", 1)[1].strip('"') for line in out.stdout.splitlines()
                if "Revealed type is" in line]
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert not errors and len(revealed) == len(EXPECTED), out.stdout + out.stderr
    for got, want in zip(revealed, EXPECTED, strict=True):
        assert re.search(want, got), f"revealed {got!r}, expected {want!r}"
