"""``--set key=value`` overrides, parsed to the type of the config dataclass field."""

import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A bad override: unknown key or a value that does not parse to the field's type."""


def apply_overrides(cfg: Any, overrides: dict[str, str]) -> Any:
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, text in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(names)}")
        try:
            changes[key] = parse_value(text, hints[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--set {key}={text!r}: {_expected(hints[key], exc)}") from None
    return dataclasses.replace(cfg, **changes)


def parse_value(text: str, kind: Any) -> Any:
    """Parse ``text`` as ``kind``: bool, int, float, str, Optional[...], Literal, tuple[...] or list[...]."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        for arg in args:
            if str(arg) == text:
                return arg
        raise ValueError(f"must be one of {list(args)}")
    if origin in (tuple, list):
        item = args[0] if args else str
        items = [parse_value(part.strip(), item) for part in text.split(",") if part.strip()]
        return tuple(items) if origin is tuple else items
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    raise TypeError(f"fields of type {kind} cannot be set from the command line")


def _expected(kind: Any, exc: Exception) -> str:
    """What a --set value should have been, e.g. "expected one of 'off', 'bf16'" or "expected int (...)"."""
    if typing.get_origin(kind) is typing.Literal:
        return "expected one of " + ", ".join(repr(arg) for arg in typing.get_args(kind))
    return f"expected {_type_name(kind)} ({exc})"


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
