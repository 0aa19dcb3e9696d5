"""The shape of the package: layers, argparse only in the command line, module sizes, and
what `mbt --help` and `import mbt` import (module absence in fresh interpreters)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = {
    "mbt": 0, "mbt._lazy": 0, "mbt.overrides": 0, "mbt.errors": 0, "mbt.device": 0,
    "mbt.models": 1,
    "mbt.data": 2,
    "mbt.weights": 3,
    "mbt.train": 4,
    "mbt.inference": 5, "mbt.embed_dataset": 5, "mbt.probe": 5, "mbt.timeline": 5, "mbt.export": 5,
    "mbt.visualize": 5, "mbt.api": 5,
    "mbt.demo": 6,
    "mbt.bench": 7, "mbt.bench_cases": 7,
    "mbt.cli": 8,
}
"""Each module (or package, with everything in it) and its floor: a module imports only
from its own floor or below."""

MAX_LINES = 950
SPLIT_ELSEWHERE: set[str] = set()
"""Modules over the limit being split into packages on another branch (issue 14)."""

HEAVY = ("torch", "numpy", "av", "torchvision", "matplotlib", "PIL", "safetensors", "timm", "yaml", "tqdm")
VERBS = ("train", "eval", "predict", "embed", "probe", "explain", "demo", "convert", "export", "flops", "bench",
         "data")


def _modules() -> list[tuple[str, Path, bool]]:
    out = []
    for path in sorted((SRC / "mbt").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out.append((".".join(parts[:-1] if is_package else parts), path, is_package))
    return out


def _imports(name: str, path: Path, is_package: bool) -> list[tuple[str, int]]:
    """(imported module, line) of every import in the file (in functions and under
    `if TYPE_CHECKING:` too), relative ones resolved; `from pkg import module` names the module."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((sub if sub in _MODULE_NAMES else module, node.lineno))
    return found


_MODULE_NAMES = {name for name, _, _ in _modules()}


def _layer(module: str) -> str:
    owners = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    assert owners, f"{module}: no floor in LAYERS (tests/test_architecture.py): add it"
    return max(owners, key=len)


def test_every_module_imports_only_from_its_floor_or_below():
    wrong = []
    for name, path, is_package in _modules():
        if name == "mbt":  # the public facade: re-exports every layer's API (lazily; statically for type checkers)
            continue
        floor = LAYERS[_layer(name)]
        for target, line in _imports(name, path, is_package):
            if target.split(".")[0] == "mbt" and LAYERS[_layer(target)] > floor:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {name} (floor {floor}) imports {target} "
                             f"(floor {LAYERS[_layer(target)]})")
    assert not wrong, "imports running up the layers:\n" + "\n".join(wrong)


KNOWN_CYCLES: set[tuple[str, ...]] = set()
"""Import circles left today (issue 14): the test fails when one is gone, to shrink this list."""


def _cycles() -> set[tuple[str, ...]]:
    """The strongly connected groups of more than one module (Tarjan) in the import graph,
    the imports under `if TYPE_CHECKING:` included (a circle in the types is one a reader
    still follows; a package's own `__init__` left out)."""
    graph: dict[str, set[str]] = {}
    for name, path, is_package in _modules():
        targets = {t for t, _ in _imports(name, path, is_package) if t.split(".")[0] == "mbt"}
        graph[name] = {t for t in targets if t in _MODULE_NAMES and t != name and not name.startswith(t + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_circles():
    cycles = _cycles()
    assert cycles <= KNOWN_CYCLES, f"new import circles: {sorted(cycles - KNOWN_CYCLES)}"
    assert cycles == KNOWN_CYCLES, f"gone, take them off KNOWN_CYCLES: {sorted(KNOWN_CYCLES - cycles)}"


def test_only_the_command_line_sees_argparse():
    wrong = [f"{path.relative_to(SRC)}:{line}" for name, path, is_package in _modules()
             if not (name == "mbt.cli" or name.startswith("mbt.cli."))
             for target, line in _imports(name, path, is_package) if target.split(".")[0] == "argparse"]
    assert not wrong, f"argparse imported outside mbt/cli: {wrong}"


@pytest.mark.parametrize("path", [p.relative_to(SRC).as_posix() for _, p, _ in _modules()])
def test_no_module_is_over_the_size_limit(path, request):
    if path in SPLIT_ELSEWHERE:  # strict: passes once split, then the entry must go
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{path}: split into a package on branch h14d"))
    lines = len((SRC / path).read_text().splitlines())
    assert lines <= MAX_LINES, f"{path}: {lines} lines (limit {MAX_LINES}): split it by job"


def _loaded_after(code: str) -> list[str]:
    """The heavy modules in `sys.modules` after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _help(argv: list[str]) -> str:
    return f"""
import contextlib, io
from mbt.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main({argv!r})
    except SystemExit as e:
        assert e.code == 0, e.code
"""


def test_help_and_version_import_nothing_heavy():
    assert _loaded_after(_help(["--help"])) == []
    assert _loaded_after(_help(["--version"])) == []


def test_each_verb_help_imports_nothing_heavy():
    code = "".join(_help([verb, "--help"]) for verb in VERBS) + _help(["data", "prepare", "--help"])
    assert _loaded_after(code) == []


def test_building_a_model_imports_no_media_or_plotting_stack():
    loaded = _loaded_after(
        "import mbt\n"
        "v = mbt.__version__\n"
        "mbt.MBT(mbt.MBTConfig(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, fusion_layer=1, "
        "image_size=(32, 32), spectrogram_size=(100, 128), num_classes=3))"
    )
    assert "torch" in loaded  # the probe sees imports
    assert not {"av", "torchvision", "matplotlib"} & set(loaded), loaded


def test_version_alone_imports_nothing_heavy():
    assert _loaded_after("import mbt\nassert mbt.__version__") == []


def test_lazy_package_attributes_are_listed_and_resolve():
    import mbt
    import mbt.data
    import mbt.train

    assert {"MBT", "MBTConfig", "load_pretrained", "__version__"} <= set(dir(mbt)) and set(mbt.__all__) <= set(dir(mbt))
    assert mbt.MBTConfig is __import__("mbt.models.config", fromlist=["MBTConfig"]).MBTConfig
    assert callable(mbt.train.preset) and mbt.data.DataConfig.__name__ == "DataConfig"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mbt.nope


def _private_names_used_across_modules() -> list[str]:
    """`from m import _name` and `m._name` (m another mbt module) anywhere in src/mbt."""
    found = []
    for name, path, is_package in _modules():
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        module_names: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    if f"{module}.{alias.name}" in _MODULE_NAMES:
                        module_names[alias.asname or alias.name] = f"{module}.{alias.name}"
                    elif (module.split(".")[0] == "mbt" and module != name and alias.name.startswith("_")
                          and not alias.name.startswith("__")):
                        found.append(f"{path.relative_to(SRC)}:{node.lineno}: from {module} import {alias.name}")
            elif isinstance(node, ast.Import):
                module_names.update({a.asname or a.name: a.name for a in node.names if a.name.split(".")[0] == "mbt"})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and module_names.get(ast.unparse(node.value), name) != name):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_name_is_used_across_modules():
    """A name another module needs is public in its module (or lives where it is used)."""
    found = _private_names_used_across_modules()
    assert not found, "underscore names used outside their module:\n" + "\n".join(found)


TESTS = Path(__file__).resolve().parent
SLOW_SIGNS = ("torch.distributed.run", "run_demo(", '*MBT, "train"')
"""What makes a test slow: torchrun, the demo, `mbt train` in another process."""


def _is_slow_mark(node: ast.expr) -> bool:
    marks = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
    return any(ast.unparse(m).split("(")[0] in ("pytest.mark.slow", "mark.slow") for m in marks)


def test_slow_tests_carry_the_slow_marker():
    """A test that (itself or through a helper of its file) runs one of `SLOW_SIGNS` is marked
    `slow`, so that `pytest -m 'not slow'` is a quick run; CI (.ci/run) runs them all."""
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        if any(isinstance(n, ast.Assign) and any(ast.unparse(t) == "pytestmark" for t in n.targets)
               and _is_slow_mark(n.value) for n in tree.body):
            continue
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        slow = {name for name, f in functions.items() if any(s in ast.get_source_segment(text, f) for s in SLOW_SIGNS)}
        for _ in range(3):  # helpers calling helpers
            slow |= {name for name, f in functions.items() if any(
                isinstance(c, ast.Call) and ast.unparse(c.func) in slow for c in ast.walk(f))}
        unmarked += [f"{path.name}::{name}" for name in sorted(slow) if name.startswith("test_")
                     and not any(_is_slow_mark(d) for d in functions[name].decorator_list)]
    assert not unmarked, f"mark these @pytest.mark.slow: {unmarked}"


ARCHITECTURE = SRC.parent / "docs" / "architecture.md"


def _named_paths(text: str) -> set[str]:
    """The source paths written in backquotes: `x.py`, and folders of two or more parts (`data/shards/`)."""
    tokens = set(re.findall(r"`([\w./]+)`", text))
    return {t for t in tokens if t.endswith(".py") or (t.endswith("/") and t.count("/") >= 2)}


def test_architecture_doc_names_every_module_and_only_modules_that_exist():
    text = ARCHITECTURE.read_text()
    modules = {p.relative_to(SRC / "mbt").as_posix() for _, p, _ in _modules()}
    table = text.split("## Every module", 1)[1]
    listed = set(re.findall(r"^\| `([\w./]+\.py)` \|", table, flags=re.M))
    assert modules - listed == set(), f"add to 'Every module' in docs/architecture.md: {sorted(modules - listed)}"
    assert listed - modules == set(), f"not modules (any more): {sorted(listed - modules)}"
    basenames = {m.rsplit("/", 1)[-1] for m in modules}
    missing = []
    for name in _named_paths(text):
        path = name.removeprefix("mbt/")
        found = ((SRC / "mbt" / path).exists() or (SRC.parent / name).exists()
                 or ("/" not in path and path in basenames))
        if not found:
            missing.append(name)
    assert not missing, f"docs/architecture.md names paths that do not exist: {sorted(missing)}"


def test_every_command_has_a_description_and_every_option_help():
    """`mbt <verb> --help` says what the verb does and what each of its options means."""
    import argparse

    from mbt.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if not (sub.description or "").strip():
                        missing.append(f"{path} {name}: no description")
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)) and (
                    not (action.help or "").strip() or action.help == argparse.SUPPRESS):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}: no help")

    walk(build_parser(), "mbt")
    assert not missing, "\n".join(missing)
