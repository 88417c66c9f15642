"""Render ``recipes/README.md`` from the recipe schema, so every key is documented.

``python -m globalflux.recipe_docs > recipes/README.md`` regenerates it; a test checks the
committed file matches.
"""

from __future__ import annotations

import json
import sys

from .config import WORKFLOWS, Recipe
from .recipe import iter_keys

HEADER = """# Recipes

A recipe is a YAML file read with safe loading into frozen, typed configs (one per stage).
Unknown keys and wrong types are rejected with the key path, the bad value and what is allowed.
Any key can be overridden on the command line: `globalflux run RECIPE --set stage.key=value`
(the value is parsed as YAML: `--set forest.n_estimators=50`, `--set sites.min_year=null`).
The resolved recipe (every key, defaults included) is written to `OUT/recipe.yaml`, and into the
attributes of every map. Relative paths are relative to the folder you run `globalflux` from.

`globalflux validate RECIPE [--set ...]` checks a recipe and prints it resolved.

## Recipes in this folder

| file | workflow | what it does |
|---|---|---|
{recipe_rows}

## Workflows

{workflows}

A section a workflow does not use is rejected; a section it uses but the recipe leaves out gets
its defaults.

## Every key

This table is generated from the schema (`python -m globalflux.recipe_docs > recipes/README.md`).

| key | type | default | meaning |
|---|---|---|---|
"""


def _recipe_rows() -> str:
    from pathlib import Path

    import yaml

    rows = []
    folder = Path(__file__).resolve().parents[1] / "recipes"
    for p in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        desc = " ".join(str(data.get("description", "")).split())
        rows.append(f"| `{p.name}` | `{data.get('workflow', '?')}` | {desc} |")
    return "\n".join(rows)


def _workflows() -> str:
    from .pipeline import workflow_module

    lines = []
    for name in WORKFLOWS:
        try:
            mod = workflow_module(name)
        except ImportError:
            continue
        doc = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
        lines.append(f"- `{name}` (sections: {', '.join(mod.SECTIONS)}): {doc}")
    return "\n".join(lines)


def render() -> str:
    out = HEADER.format(recipe_rows=_recipe_rows(), workflows=_workflows())
    for key, tname, default, doc in iter_keys(Recipe):
        if tname.startswith("a mapping") and default is None:
            d = ""
        else:
            d = "`" + json.dumps(default, ensure_ascii=False) + "`"
        tname = tname.replace("|", "\\|")
        doc = " ".join(str(doc).split()).replace("|", "\\|")
        out += f"| `{key}` | {tname} | {d.replace('|', chr(92) + '|')} | {doc} |\n"
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
