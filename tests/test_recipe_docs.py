"""recipes/README.md documents every recipe key (it is generated from the schema)."""

from globalflux.config import Recipe
from globalflux.recipe import iter_keys
from globalflux.recipe_docs import render


def test_every_key_has_a_doc():
    undocumented = [key for key, _, _, doc in iter_keys(Recipe) if not str(doc).strip()]
    assert undocumented == []


def test_recipes_readme_is_up_to_date(repo_root):
    committed = (repo_root / "recipes" / "README.md").read_text(encoding="utf-8")
    assert committed == render(), (
        "recipes/README.md is stale: run `python -m globalflux.recipe_docs > recipes/README.md`"
    )


def test_every_recipe_file_validates(repo_root):
    from globalflux.pipeline import validate

    files = sorted((repo_root / "recipes").glob("*.yaml"))
    assert files, "no recipes found"
    for path in files:
        validate(path)
