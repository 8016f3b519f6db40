"""Strict TOML input: job specs and the alert thresholds file are dataclasses built from TOML tables, with one
error line that names the file and the key for anything unknown, missing or of the wrong type."""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Callable, TypeVar

from core.errors import UserError

T = TypeVar("T")


def read_toml(path: str | Path, what: str, parse: Callable[[dict], T]) -> T:
    """Read and parse a TOML file; every error is one UserError line naming the file (`what`: "job file")."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    try:
        return parse(data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def check_type(value, annotation, key: str):
    """Validate `value` against a dataclass field annotation; return the value (ints accepted for floats)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return check_type(value, option, key)
            except UserError as e:
                errors.append(e)
        raise errors[0] if errors else UserError(f"{key}: unexpected value {value!r}")
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise UserError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, key)
    raise AssertionError(f"unsupported annotation {annotation!r}")  # programming error, not user input


def build(cls, data, prefix: str = ""):
    """An instance of dataclass `cls` from a TOML table: unknown keys, missing keys and wrong types are errors
    that name the key (`prefix` is the table's dotted path)."""
    if not isinstance(data, dict):
        raise UserError(f"{prefix}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise UserError(f"unknown key '{where}' (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = check_type(data[f.name], hints[f.name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"missing required key '{where}'")
    return cls(**kwargs)
