"""`key=value` overrides of dataclass configs, typed by the fields they set.

`apply_overrides(cfg, ["fusion_layer=4", "patch_size=[16,16]"])` returns a copy with
the fields set; nested dataclasses take dotted keys (`model.fusion_layer=4`). Values are
parsed as YAML scalars/lists and checked against the field's annotation, so a typo in a
key or a value of the wrong type is an error that names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from .io import UnsafeYAMLError, load_yaml


class OverrideError(ValueError):
    """An override names no field or gives a value of the wrong type."""


def apply_overrides(cfg: Any, assignments: Iterable[str]) -> Any:
    """A copy of dataclass `cfg` with each `key=value` assignment applied."""
    for assignment in assignments:
        if "=" not in assignment:
            raise OverrideError(f"{assignment!r}: expected KEY=VALUE")
        key, text = assignment.split("=", 1)
        cfg = set_field(cfg, key.strip(), parse_value(text))
    return cfg


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


def parse_value(text: str, key: str = "value") -> Any:
    """A YAML scalar or list: `4`, `0.5`, `true`, `null`, `[16, 16]`, `spectrogram`; aliases bounded
    as in config files (an error naming `key`)."""
    try:
        return load_yaml(text, key)
    except UnsafeYAMLError as e:
        raise OverrideError(str(e)) from e
    except ValueError:
        return text


def set_field(cfg: Any, key: str, value: Any) -> Any:
    """A copy of `cfg` with dotted field `key` set to `value` (converted to the field type)."""
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise OverrideError(f"{key}: {type(cfg).__name__} has no field {head!r}; fields: {sorted(fields)}")
    hints = typing.get_type_hints(type(cfg))
    if rest:
        child = getattr(cfg, head)
        if not dataclasses.is_dataclass(child):
            raise OverrideError(f"{key}: {head!r} is not a section with sub-fields")
        return _replace(cfg, key, **{head: set_field(child, rest, value)})
    return _replace(cfg, key, **{head: coerce(value, hints[head], key)})


def _replace(cfg: Any, key: str, **changes: Any) -> Any:
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as e:
        message = str(e)
        field = key.rsplit(".", 1)[-1]
        raise OverrideError(message if message.startswith(field) else f"{key}: {message}") from e


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
        if isinstance(value, (dict, list)):
            raise OverrideError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise OverrideError(f"{key}: expected a mapping of {annotation.__name__} fields")
        return annotation(**value)
    return value
