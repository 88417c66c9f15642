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


# ---- the demo recipe and the synthetic section (issue 2) ------------------------------------

from pathlib import Path  # noqa: E402

from globalflux.errors import GridError  # noqa: E402
from globalflux.recipe import dump_recipe, load_recipe  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def test_demo_recipe_is_valid_and_round_trips():
    from globalflux.pipeline import resolve_sections

    r = resolve_sections(load_recipe(DEMO))
    assert r.workflow == "synthetic_zoned_rh"
    assert r.synthetic.ny >= 256 and r.synthetic.nx >= 256 and r.synthetic.n_years >= 1
    assert r.mapping.cog is True
    again = parse_recipe(__import__("yaml").safe_load(dump_recipe(r)))
    assert again == r


def test_synthetic_extent_and_bbox_inside():
    r = parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh",
                      "synthetic": {"ny": 100, "nx": 200, "resolution": 0.01, "west": 5.0,
                                    "north": 50.0, "bbox": [5.5, 49.5, 6.0, 49.8]}})
    assert r.synthetic.extent == (5.0, 49.0, 7.0, 50.0)
    assert r.synthetic.bbox == (5.5, 49.5, 6.0, 49.8)


def test_synthetic_bbox_partly_outside_is_allowed_fully_outside_is_not():
    base = {"name": "x", "workflow": "synthetic_zoned_rh"}
    parse_recipe({**base, "synthetic": {"bbox": [9.0, 47.0, 10.5, 49.0]}})  # overlaps
    with pytest.raises(GridError) as e:
        parse_recipe({**base, "synthetic": {"bbox": [12.0, 47.0, 13.0, 48.0]}}, source="r.yaml")
    msg = str(e.value)
    assert msg.startswith("r.yaml: synthetic.bbox: bbox [12.0, 47.0, 13.0, 48.0] is outside")
    assert "[10.0000, 46.8480, 11.1520, 48.0000]" in msg


def test_synthetic_world_must_fit_on_the_globe():
    with pytest.raises(RecipeError) as e:
        parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh",
                      "synthetic": {"west": 179.0, "nx": 1000}})
    assert "synthetic: the world (256x1000 pixels of 0.0045 deg from west=179.0" in str(e.value)
    assert "east=183.5000" in str(e.value)


def test_synthetic_bbox_needs_four_numbers():
    with pytest.raises(RecipeError) as e:
        parse_recipe({"name": "x", "workflow": "synthetic_zoned_rh",
                      "synthetic": {"bbox": [10.0, 47.0, 11.0]}})
    assert "synthetic.bbox: got [10.0, 47.0, 11.0] (list)" in str(e.value)
    assert "a list of 4 values" in str(e.value)
