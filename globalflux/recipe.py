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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import Recipe
from .config._schema import from_mapping, iter_keys, option, schema_type_at, to_mapping
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
        schema_type_at(cls, dotted, None)
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
    data = apply_overrides(Recipe, dict(data), overrides)
    return from_mapping(Recipe, data, source=source)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()):
    """Read, override and validate a recipe file."""
    data = read_yaml(path)
    return parse_recipe(data, overrides, source=str(path))


def dump_recipe(recipe: Any) -> str:
    """The resolved recipe (every key, defaults included) as YAML text."""
    return yaml.safe_dump(to_mapping(recipe), sort_keys=False, allow_unicode=True)
