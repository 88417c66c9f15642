"""Recipes: YAML (safe-loaded) -> frozen, typed, documented dataclasses, one per stage.

A recipe is data. This module holds the strict machinery: unknown keys and wrong types are
rejected with the key path, the bad value and what is allowed; ``--set stage.key=value``
overrides any key; defaults live in one place (the dataclass fields); the resolved recipe is
dumped back to YAML next to the outputs.

Stage configs live in :mod:`globalflux.config` (one module per stage). Each field is declared
with :func:`option`, which carries its documentation and constraints; ``recipes/README.md`` is
checked against these docs by a test, so every key is documented.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import RecipeError

__all__ = [
    "option",
    "from_mapping",
    "to_mapping",
    "load_recipe",
    "parse_recipe",
    "apply_overrides",
    "dump_recipe",
    "iter_keys",
]

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
        return tuple(_convert(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
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


def _schema_type_at(cls: type, dotted: str, source: str | None) -> None:
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


def apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to raw recipe data."""
    data = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(
                f"got {item!r}", where="--set", fix="Write overrides as stage.key=value."
            )
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        _schema_type_at(cls, dotted, None)
        try:
            value = safe_load_bounded(raw, source=f"--set {dotted}") if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise RecipeError(f"value {raw!r} is not valid YAML ({exc.__class__.__name__})",
                              where=f"--set {dotted}", fix="Quote strings and use YAML syntax.") from None
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


#: a recipe file larger than this is refused (real recipes are a few kB)
MAX_RECIPE_BYTES = 1 << 20
#: deepest nesting of mappings/lists allowed in a recipe
MAX_DEPTH = 32
#: most nodes (scalars, mappings, lists) a recipe may expand to, aliases counted at every use
MAX_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses recursive aliases and bounds depth and expanded size.

    Aliases are allowed (they are handy in recipes) but every use counts its whole subtree, so a
    "billion laughs" file fails at :data:`MAX_NODES` nodes, long before memory is spent.
    """

    def __init__(self, stream, source: str):
        super().__init__(stream)
        self._source = source
        self._sizes: dict[int, int] = {}
        self._active: set[int] = set()

    def _fail(self, what: str, node) -> RecipeError:
        mark = getattr(node, "start_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        return RecipeError(f"{what}{line}", where=self._source,
                           fix="Write the recipe as a plain, shallow YAML mapping.")

    def _measure(self, node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise self._fail(f"nesting deeper than {MAX_DEPTH} levels", node)
        key = id(node)
        if key in self._sizes:
            return self._sizes[key]
        if key in self._active:
            raise self._fail("a recursive alias (an anchor that contains itself)", node)
        self._active.add(key)
        n = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += self._measure(k, depth + 1) + self._measure(v, depth + 1)
                if n > MAX_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                n += self._measure(v, depth + 1)
                if n > MAX_NODES:
                    break
        self._active.discard(key)
        self._sizes[key] = n
        if n > MAX_NODES:
            raise self._fail(f"expands to more than {MAX_NODES} values (aliases counted at each use)",
                             node)
        return n

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH + 1:
                raise self._fail(f"nesting deeper than {MAX_DEPTH} levels", self.peek_event())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            self._measure(node, 0)
        return node


def safe_load_bounded(text: str, *, source: str = "recipe") -> Any:
    """``yaml.safe_load`` with the bounds of :class:`_BoundedLoader` (size, depth, aliases)."""
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(f"is {len(text)} characters, more than {MAX_RECIPE_BYTES}", where=source,
                          fix="A recipe is a small YAML file; keep data in files it points to.")
    loader = _BoundedLoader(text, source)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise RecipeError("nesting too deep", where=source,
                          fix="Write the recipe as a plain, shallow YAML mapping.") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a YAML mapping, bounded (size, depth, aliases, UTF-8); errors name the file."""
    from .errors import InputFileError

    p = Path(path)
    if not p.is_file():
        raise InputFileError("recipe file not found", where=str(p),
                             fix="Check the path (relative paths start from the current folder).")
    try:
        size = p.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"is {size} bytes, more than {MAX_RECIPE_BYTES}", where=str(p),
                              fix="A recipe is a small YAML file; keep data in files it points to.")
        with open(p, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read ({exc.strerror or exc.__class__.__name__})", where=str(p),
                             fix="Check the path and its permissions.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {exc.start})",
                          where=str(p), fix="Save the recipe as UTF-8.") from None
    try:
        data = safe_load_bounded(text, source=str(p))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"not valid YAML{line}", where=str(p),
                          fix="Fix the YAML syntax (indentation, colons, quotes).") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"top level is a {type(data).__name__}", where=str(p),
                          fix="A recipe is a YAML mapping of stage names to settings.")
    return data


def parse_recipe(data: Mapping[str, Any], overrides: Sequence[str] = (), source: str | None = None):
    """Raw mapping (+ overrides) -> :class:`globalflux.config.Recipe`."""
    from .config import Recipe

    data = apply_overrides(Recipe, dict(data), overrides)
    return from_mapping(Recipe, data, source=source)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()):
    """Read, override and validate a recipe file."""
    data = read_yaml(path)
    return parse_recipe(data, overrides, source=str(path))


def dump_recipe(recipe: Any) -> str:
    """The resolved recipe (every key, defaults included) as YAML text."""
    return yaml.safe_dump(to_mapping(recipe), sort_keys=False, allow_unicode=True)


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
