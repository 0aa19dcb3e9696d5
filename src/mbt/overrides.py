"""`key=value` overrides of dataclass configs, typed by the fields they set, and the one
reading of config values: `--set` on every command and YAML config files alike.

`apply_overrides(cfg, ["fusion_layer=4", "patch_size=[16,16]"])` returns a copy with the
fields set; nested dataclasses take dotted keys (`model.fusion_layer=4`), and each
dataclass is rebuilt once with all its changes, so fields that must agree can change
together. A typo in a key or a value of the wrong type is an error that names the key.

Values (`parse_value`, and `ConfigLoader` for whole files) are YAML with the YAML 1.2
scalars, so that a word stays a word:

- `null`, `none`, `~` or nothing: None (`train.max_grad_norm=null`, `train.init_from=none`);
- `true` / `false`: booleans; `on`/`off`/`yes`/`no` are strings, read as booleans only by a
  boolean field (so `train.amp=off` is the mode 'off' and `train.freeze=off` is false);
- numbers: `4`, `-4`, `0.5`, `1e-4`, `.inf`;
- lists `[16, 16]` and tuples `(16, 16)`;
- anything else is a string (`classifier=gap`, `root=/data/as`); quote to keep a string that
  reads otherwise (`'none'`, `"1e-4"`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml

from .errors import ConfigError
from .io import UnsafeYAMLError, load_yaml


class OverrideError(ConfigError):
    """An override names no field or gives a value of the wrong type."""


_BOOL, _FLOAT, _INT, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("bool", "float", "int", "null"))
_TUPLE = "tag:mbt,2026:tuple"
BOOL_WORDS = {"true": True, "false": False, "on": True, "off": False, "yes": True, "no": False}
"""The words a boolean field takes (any case)."""


def _yaml12_scalars(cls: type) -> type:
    """`cls` (a SafeLoader subclass) resolving plain scalars as listed in the module docstring
    instead of YAML 1.1's (which reads `off` and `no` as false, `1e-4` as a string and `010` as 8)."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT, _INT, _NULL)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return _add_scalars(cls)


def _add_scalars(cls: type) -> type:
    """`cls` also resolving the plain scalars of the module docstring."""
    cls.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    cls.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|none|None|NONE|)$"), ["~", "n", "N", ""])
    cls.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
    cls.add_implicit_resolver(
        _FLOAT, re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+\.?[0-9]*)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$"
                           r"|^\.(?:nan|NaN|NAN)$"), list("-+0123456789."))
    cls.add_implicit_resolver(_TUPLE, re.compile(r"^\(.*\)$", re.S), ["("])
    return cls


@_yaml12_scalars
class ConfigLoader(yaml.SafeLoader):
    """The YAML loader of config files and `--set` values (`yaml.SafeLoader`: no tags that
    build objects), with the scalars of the module docstring."""


def _construct_int(loader: ConfigLoader, node: yaml.ScalarNode) -> int:
    return int(loader.construct_scalar(node))  # decimal: '010' is 10, not YAML 1.1's octal 8


def _construct_tuple(loader: ConfigLoader, node: yaml.ScalarNode) -> list[Any]:
    text = loader.construct_scalar(node)
    try:
        return load_yaml(f"[{text[1:-1]}]", "tuple", ConfigLoader)
    except ValueError as e:
        raise yaml.constructor.ConstructorError(None, None, f"{text!r}: not a tuple of values", node.start_mark) from e


ConfigLoader.add_constructor(_INT, _construct_int)
ConfigLoader.add_constructor(_TUPLE, _construct_tuple)


@_add_scalars
class ConfigDumper(yaml.SafeDumper):
    """Writes configs that `ConfigLoader`, and YAML 1.1 readers such as `yaml.safe_load`, read back
    to the same values: a string that either would read otherwise ('off', 'none', '1e-4') is quoted."""


def parse_value(text: str, key: str = "value") -> Any:
    """A config value written on a command line: `4`, `1e-4`, `true`, `off`, `none`, `[16, 16]`,
    `(16, 16)`, `spectrogram` (see the module docstring); the text itself when it is not YAML.
    Aliases are bounded as in config files (`mbt.io.load_yaml`; an error naming `key`)."""
    try:
        return load_yaml(text, key, ConfigLoader)
    except UnsafeYAMLError as e:
        raise OverrideError(str(e)) from e
    except ValueError:
        return text


class _Section(dict):
    """The values of a dotted key's sub-fields (`model.fusion_layer=4` -> model: {fusion_layer: 4})."""


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` assignments as a nested mapping of parsed values (a later one wins)."""
    nested: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            raise OverrideError(f"{assignment!r}: expected KEY=VALUE (SECTION.FIELD=VALUE in a sectioned config)")
        *heads, last = key.split(".")
        target = nested
        for head in heads:
            if not isinstance(target.get(head), _Section):
                target[head] = _Section()  # replaces an earlier `head=value`: the later one wins
            target = target[head]
        target[last] = parse_value(text, key)
    return nested


def apply_overrides(cfg: Any, assignments: Iterable[str]) -> Any:
    """A copy of dataclass `cfg` with the `key=value` assignments applied together."""
    return update(cfg, parse_assignments(assignments))


def update(cfg: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """A copy of dataclass `cfg` with `values` (field -> value, a mapping for a nested dataclass)
    set, each type-checked, rebuilt once so its checks see all changes together."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    merged = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise OverrideError(f"{key}: unknown key ({type(cfg).__name__} has no field {name!r}); "
                                f"fields: {sorted(fields)}")
        child = getattr(cfg, name)
        if dataclasses.is_dataclass(child) and isinstance(value, dict):
            merged[name] = update(child, value, f"{key}.")
        elif isinstance(value, _Section):
            raise OverrideError(f"{key}: {name!r} is not a section with sub-fields")
        else:
            merged[name] = coerce(value, hints[name], key)
    try:
        return type(cfg)(**merged)
    except (TypeError, ValueError) as e:
        message = str(e)
        raise OverrideError(message if not prefix or message.startswith(prefix) else f"{prefix}{message}") from e


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """`cls(**data)` for a dataclass, refusing keys it has no field for (a saved config
    from another version, a typo in a file) with a message naming them."""
    if not isinstance(data, dict):
        raise OverrideError(f"expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise OverrideError(f"unknown {cls.__name__} field(s) {unknown[:20]}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)  # each value checked against its field's type, naming the field
    return cls(**{k: coerce(v, hints[k], k) for k, v in data.items()})


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` as the type `annotation` describes, or an `OverrideError` naming `key`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key)
            except OverrideError as e:
                errors.append(str(e))
        raise OverrideError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise OverrideError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [coerce(v, args[0], key) for v in value]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise OverrideError(f"{key}: expected {len(args)} values, got {list(value)}")
            items = [coerce(v, a, key) for v, a in zip(value, args, strict=True)]
        else:
            items = [coerce(v, args[0], key) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise OverrideError(f"{key}: expected a mapping, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        raise OverrideError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OverrideError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OverrideError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, (dict, list, bool)):
            raise OverrideError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise OverrideError(f"{key}: expected a mapping of {annotation.__name__} fields")
        return annotation(**value)
    return value
