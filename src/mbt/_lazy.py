"""Package attributes imported on first use (PEP 562), so that `import mbt` or the command
line's `mbt --help` only import the modules they touch."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], modules: tuple[str, ...] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose attribute `name` is that of the
    submodule `exports[name]` (relative, e.g. ".models"), or for a name in `modules` the
    submodule itself (a `callable_module`)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        value = module if name in modules else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__


class _CallableModule(types.ModuleType):
    """A module that can be called: `mbt.train(...)` runs training while `mbt.train.config`
    stays the module's. The call goes to the function named by `__verb__`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self.__verb__.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


def callable_module(name: str, verb: str) -> None:
    """Make module `name` callable as the function `verb` ('package.module:function', imported on
    first call, as `lazy_exports` does), so that a verb of the Python API can share its name with
    the module that implements it."""
    module = sys.modules[name]
    module.__verb__ = verb  # type: ignore[attr-defined]
    module.__class__ = _CallableModule
