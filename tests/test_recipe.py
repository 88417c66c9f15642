import pytest

from globalflux.errors import RecipeError
from globalflux.recipe import parse_recipe


def test_unknown_key_names_path_and_allowed():
    with pytest.raises(RecipeError) as e:
        parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh", "zones": {"n_zone": 3}}, source="r.yaml")
    msg = str(e.value)
    assert "r.yaml: zones.n_zone: unknown key" in msg and "n_zones" in msg


def test_wrong_type_names_value_and_allowed():
    with pytest.raises(RecipeError) as e:
        parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh", "zones": {"n_zones": "four"}})
    assert "zones.n_zones: got 'four' (str)" in str(e.value) and "an integer" in str(e.value)


def test_set_override_and_unknown_set():
    r = parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh"}, ["zones.n_zones=5"])
    assert r.zones.n_zones == 5
    with pytest.raises(RecipeError) as e:
        parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh"}, ["zones.nope=1"])
    assert "--set zones.nope: unknown key" in str(e.value)


def test_out_of_range():
    with pytest.raises(RecipeError) as e:
        parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh", "zones": {"variance": 1.5}})
    assert "between 0.1 and 1.0" in str(e.value)
