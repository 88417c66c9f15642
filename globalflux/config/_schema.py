"""The recipe schema machinery: the leaf that the stage configs are declared with.

:func:`option` declares a field with its documentation, units and numeric bounds; conversion
(:func:`from_mapping`) is strict: unknown keys and wrong types are rejected with the key path,
NaN and inf are refused for every number, bounds are applied; :func:`iter_keys` walks a schema for
the generated key reference (``recipes/README.md``). It imports nothing of globalflux but
:mod:`globalflux.errors`, so ``globalflux.config`` (the stage schemas) and ``globalflux.recipe``
(YAML reading, overrides) both build on it without importing each other.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from ..errors import RecipeError

__all__ = ["option", "from_mapping", "to_mapping", "iter_keys", "schema_type_at"]

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    doc: str = "",
    *,
    default_factory: Any = _MISSING,
    min: float | None = None,  # noqa: A002 - reads naturally in declarations
    max: float | None = None,  # noqa: A002
    units: str | None = None,
) -> Any:
    """Declare a recipe field with its documentation and numeric bounds."""
    meta = {"doc": doc, "min": min, "max": max, "units": units}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return "a list of " + str(len(args)) + " values (" + ", ".join(_type_name(a) for a in args) + ")"
    if origin in (dict, Mapping):
        k, v = get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _fail(path: str, value: Any, tp: Any, source: str | None) -> RecipeError:
    where = f"{source}: {path}" if source else path
    return RecipeError(
        f"got {value!r} ({type(value).__name__})",
        where=where,
        fix=f"Allowed: {_type_name(tp)}.",
    )


def _convert(value: Any, tp: Any, path: str, source: str | None, meta: Mapping | None = None) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: X's own error is the most precise
            return _convert(value, members[0], path, source, meta)
        if isinstance(value, Mapping):
            dcs = [a for a in members if dataclasses.is_dataclass(a)]
            if len(dcs) == 1:
                return _convert(value, dcs[0], path, source, meta)
        for arg in members:
            try:
                return _convert(value, arg, path, source, meta)
            except RecipeError:  # try the next member of the union
                continue
        raise _fail(path, value, tp, source)
    if origin is Literal:
        if value not in get_args(tp):
            raise _fail(path, value, tp, source)
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise _fail(path, value, tp, source)
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(path, value, tp, source)
        return tuple(_convert(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(path, value, tp, source)
        kt, vt = get_args(tp)
        return {
            _convert(k, kt, f"{path}.{k}", source): _convert(v, vt, f"{path}.{k}", source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _fail(path, value, tp, source)
        return from_mapping(tp, value, path=path, source=source)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, value, tp, source)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, value, tp, source)
        out: Any = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, value, tp, source)
        out = float(value)
        if not math.isfinite(out):  # NaN and inf pass every comparison: refuse them here
            where = f"{source}: {path}" if source else path
            raise RecipeError(f"got {value!r}", where=where, fix="Allowed: a finite number.")
    elif tp is str:
        if not isinstance(value, str):
            raise _fail(path, value, tp, source)
        return value
    elif tp is Any:
        return value
    else:  # pragma: no cover - a config declared a type this loader does not know
        raise TypeError(f"recipe type {tp!r} at {path} is not supported")
    if meta:
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            where = f"{source}: {path}" if source else path
            rng = f"between {lo} and {hi}" if lo is not None and hi is not None else (
                f">= {lo}" if lo is not None else f"<= {hi}"
            )
            raise RecipeError(f"got {value!r}", where=where, fix=f"Allowed: a value {rng}.")
    return out


def from_mapping(cls: type, data: Mapping[str, Any], *, path: str = "", source: str | None = None):
    """Build the frozen dataclass ``cls`` from ``data``, strictly.

    Unknown keys, wrong types, out-of-range numbers and missing required keys raise
    :class:`RecipeError` naming the key path (``stage.key``), the bad value and what is allowed.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            where = f"{source}: {key_path}" if source else key_path
            raise RecipeError(
                "unknown key",
                where=where,
                fix=f"Allowed keys here: {', '.join(sorted(fields))}.",
            )
        kwargs[key] = _convert(value, hints[key], key_path, source, fields[key].metadata)
    for name, f in fields.items():
        if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING:
            key_path = f"{path}.{name}" if path else name
            where = f"{source}: {key_path}" if source else key_path
            raise RecipeError("required key is missing", where=where,
                              fix=f"Add it ({_type_name(hints[name])}): {f.metadata.get('doc', '')}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(path=path, source=source)
    return obj


def to_mapping(obj: Any) -> Any:
    """The plain-YAML form of a config (tuples become lists, dataclasses mappings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


def schema_type_at(cls: type, dotted: str, source: str | None) -> None:
    """Raise RecipeError if ``dotted`` is not a key path of the schema ``cls``."""
    parts = dotted.split(".")
    tp: Any = cls
    walked = []
    for part in parts:
        # unwrap Optional[...] around dataclasses
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            dcs = [a for a in members if dataclasses.is_dataclass(a)]
            tp = dcs[0] if dcs else members[0]
        if get_origin(tp) in (dict, Mapping):
            tp = get_args(tp)[1]
            walked.append(part)
            continue
        if not dataclasses.is_dataclass(tp):
            raise RecipeError(
                "unknown key",
                where=f"--set {dotted}",
                fix=f"'{'.'.join(walked)}' is a value, not a section; set it directly.",
            )
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise RecipeError(
                "unknown key",
                where=f"--set {dotted}",
                fix=f"Allowed keys under '{'.'.join(walked) or 'the recipe'}': "
                f"{', '.join(sorted(hints))}.",
            )
        walked.append(part)
        tp = hints[part]


def iter_keys(cls: type, prefix: str = ""):
    """Yield ``(key_path, type_name, default, doc)`` for every key of a config schema."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        inner = tp
        if get_origin(tp) in (Union, types.UnionType):
            dcs = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
            inner = dcs[0] if dcs else tp
        if dataclasses.is_dataclass(inner):
            yield key, _type_name(inner), None, f.metadata.get("doc", "")
            yield from iter_keys(inner, prefix=key + ".")
        else:
            if f.default is not _MISSING:
                default = f.default
            elif f.default_factory is not _MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            yield key, _type_name(tp), to_mapping(default), f.metadata.get("doc", "")
