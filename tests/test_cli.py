"""The ``globalflux`` command: exit codes and the wording of bad-input messages.

Exit 0 on success, 2 on a bad input (one line naming the input and the fix, no traceback),
1 on an internal error; ``--debug`` shows the traceback. The bad inputs are checked before any
heavy work, so these tests are fast.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from globalflux import __version__
from globalflux.cli import main

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("globalflux: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


BASE = """\
name: t
workflow: synthetic_zoned_rh
"""


def test_unknown_recipe_key_exits_2_naming_path_and_allowed(tmp_path, capsys):
    r = write(tmp_path, BASE + "synthetic:\n  n_sitez: 10\n")
    code, _, err = run_cli(["validate", r], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"{r}: synthetic.n_sitez: unknown key" in line
    assert "Allowed keys here:" in line and "n_sites" in line


def test_unknown_top_level_key_exits_2(tmp_path, capsys):
    r = write(tmp_path, BASE + "forests:\n  n_estimators: 10\n")
    code, _, err = run_cli(["run", r, "--out", tmp_path / "o"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "forests: unknown key" in line and "forest" in line
    assert not (tmp_path / "o").exists()  # nothing written for a bad recipe


def test_wrong_type_exits_2_naming_value_and_allowed(tmp_path, capsys):
    r = write(tmp_path, BASE + "synthetic:\n  ny: two hundred\n")
    code, _, err = run_cli(["run", r, "--out", tmp_path / "o"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "synthetic.ny: got 'two hundred' (str)" in line
    assert "Allowed: an integer" in line


def test_wrong_type_in_a_list_value(tmp_path, capsys):
    r = write(tmp_path, BASE + "synthetic:\n  bbox: [10.0, 47.0, east, 48.0]\n")
    code, _, err = run_cli(["validate", r], capsys)
    assert code == 2
    assert "synthetic.bbox[2]: got 'east' (str)" in one_error_line(err)


def test_out_of_range_value_exits_2(tmp_path, capsys):
    r = write(tmp_path, BASE + "synthetic:\n  ny: 4\n")
    code, _, err = run_cli(["validate", r], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "synthetic.ny: got 4" in line and "between 16 and 20000" in line


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code, _, err = run_cli(["run", missing, "--out", tmp_path / "o"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"{missing}: recipe file not found" in line and "Check the path" in line


def test_missing_input_file_named_in_recipe_exits_2(tmp_path, capsys):
    missing = tmp_path / "network_sites.parquet"
    r = write(tmp_path, BASE + f"synthetic:\n  ny: 32\n  nx: 32\n  sites_file: {missing}\n")
    code, _, err = run_cli(["run", r, "--out", tmp_path / "o"], capsys)
    assert code == 2
    line = one_error_line(err)
    # the preflight names the key and the path, before the run folder exists
    assert f"synthetic.sites_file {missing}: does not exist" in line and "Check the path" in line
    assert not (tmp_path / "o").exists()


def test_sites_file_with_no_site_on_land_exits_2(tmp_path, capsys):
    import pandas as pd

    from globalflux.io.tables import write_table

    f = write_table(pd.DataFrame({"site_id": ["US-A", "US-B"], "lat": [40.0, 41.0],
                                  "lon": [-100.0, -101.0]}), tmp_path / "sites.parquet")
    r = write(tmp_path, BASE + f"synthetic:\n  ny: 32\n  nx: 32\n  n_sites: 8\n"
              f"  min_sites_per_zone: 1\n  sites_file: {f}\n")
    code, _, err = run_cli(["run", r, "--out", tmp_path / "o"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"synthetic.sites_file {f}: none of the 2 site locations lies on the world's land" in line
    assert "Move the world (synthetic.west/north)" in line


def test_bbox_outside_the_world_exits_2(tmp_path, capsys):
    r = write(tmp_path, BASE + "synthetic:\n  bbox: [-60.0, -10.0, -59.0, -9.0]\n")
    code, _, err = run_cli(["run", r, "--out", tmp_path / "o"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"{r}: synthetic.bbox: bbox [-60.0, -10.0, -59.0, -9.0] is outside the synthetic world" in line
    assert "[10.0000, 46.8480, 11.1520, 48.0000]" in line
    assert "overlaps the world" in line


def test_bbox_outside_the_world_via_set_exits_2(capsys, tmp_path):
    code, _, err = run_cli(["validate", DEMO, "--set", "synthetic.bbox=[0, 0, 1, 1]"], capsys)
    assert code == 2
    assert "synthetic.bbox: bbox [0.0, 0.0, 1.0, 1.0] is outside the synthetic world" in one_error_line(err)


def test_inverted_bbox_exits_2(capsys):
    code, _, err = run_cli(["validate", DEMO, "--set", "synthetic.bbox=[11, 47, 10.5, 48]"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "bbox [11.0, 47.0, 10.5, 48.0] is empty or inverted" in line and "west < east" in line


def test_set_unknown_key_exits_2(capsys, tmp_path):
    code, _, err = run_cli(["run", DEMO, "--out", tmp_path / "o", "--set", "forest.n_trees=5"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "--set forest.n_trees: unknown key" in line
    assert "Allowed keys under 'forest':" in line and "n_estimators" in line


def test_set_unknown_section_exits_2(capsys):
    code, _, err = run_cli(["validate", DEMO, "--set", "forests.n_estimators=5"], capsys)
    assert code == 2
    assert "--set forests.n_estimators: unknown key" in one_error_line(err)


def test_set_wrong_type_exits_2(capsys):
    code, _, err = run_cli(["validate", DEMO, "--set", "synthetic.seed=abc"], capsys)
    assert code == 2
    assert "synthetic.seed: got 'abc' (str)" in one_error_line(err)


def test_set_without_equals_exits_2(capsys):
    code, _, err = run_cli(["validate", DEMO, "--set", "synthetic.seed"], capsys)
    assert code == 2
    assert "--set: got 'synthetic.seed'" in one_error_line(err)


def test_invalid_yaml_exits_2(tmp_path, capsys):
    r = write(tmp_path, "name: t\nworkflow: [unclosed\n")
    code, _, err = run_cli(["validate", r], capsys)
    assert code == 2
    assert f"{r}: not valid YAML" in one_error_line(err)


def test_section_not_used_by_workflow_exits_2(tmp_path, capsys):
    r = write(tmp_path, BASE + "lstm:\n  epochs: 3\n")
    code, _, err = run_cli(["validate", r], capsys)
    assert code == 2
    assert "lstm: section 'lstm' is not used by workflow 'synthetic_zoned_rh'" in one_error_line(err)


def test_existing_output_folder_exits_2_and_is_untouched(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    keep = out / "precious.txt"
    keep.write_text("keep me")
    code, _, err = run_cli(["run", DEMO, "--out", out], capsys)
    assert code == 2
    assert f"{out}: output folder exists and is not empty" in one_error_line(err)
    assert keep.read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_resume_with_another_recipe_exits_2(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "recipe.yaml").write_text("name: other\nworkflow: static_cube\n")
    code, _, err = run_cli(["run", DEMO, "--out", out, "--resume"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "was made by another recipe (name 'other', workflow 'static_cube')" in line
    assert (out / "recipe.yaml").read_text() == "name: other\nworkflow: static_cube\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"globalflux {__version__}"


def test_validate_prints_the_resolved_recipe(capsys):
    import yaml

    code, out, err = run_cli(["validate", DEMO, "--set", "synthetic.ny=64"], capsys)
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["workflow"] == "synthetic_zoned_rh"
    assert resolved["synthetic"]["ny"] == 64 and resolved["synthetic"]["nx"] == 256
    # defaults are filled in: every key the workflow uses is shown
    assert resolved["mapping"]["cog"] is True and "n_estimators" in resolved["forest"]
    assert "valid (synthetic_zoned_rh)" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run"])  # missing RECIPE
    assert e.value.code == 2


def _boom(recipe, ctx):
    raise RuntimeError("a bug in a stage")


def test_internal_error_exits_1_with_hint(monkeypatch, tmp_path, capsys):
    import globalflux.workflows.synthetic_zoned_rh as wf

    monkeypatch.setattr(wf, "run", _boom)
    code, _, err = run_cli(["run", DEMO, "--out", tmp_path / "o"], capsys)
    assert code == 1
    assert "globalflux: internal error: RuntimeError: a bug in a stage" in err
    assert "--debug" in err and "Traceback" not in err
    assert (tmp_path / "o" / "recipe.yaml").is_file() and (tmp_path / "o" / "log.txt").is_file()


def test_debug_raises_internal_error(monkeypatch, tmp_path):
    import globalflux.workflows.synthetic_zoned_rh as wf

    monkeypatch.setattr(wf, "run", _boom)
    with pytest.raises(RuntimeError, match="a bug in a stage"):
        main(["--debug", "run", str(DEMO), "--out", str(tmp_path / "o")])


def test_debug_shows_traceback_of_bad_input(tmp_path):
    missing = tmp_path / "nope.yaml"
    proc = subprocess.run([sys.executable, "-m", "globalflux.cli", "--debug", "validate", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "InputFileError" in proc.stderr and "recipe file not found" in proc.stderr


def test_console_script_exit_code_2(tmp_path):
    """The installed ``globalflux`` entry point returns 2 to the shell on a bad input."""
    import shutil

    exe = shutil.which("globalflux")
    cmd = [exe] if exe else [sys.executable, "-m", "globalflux.cli"]
    proc = subprocess.run(cmd + ["validate", str(tmp_path / "nope.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("recipe file not found. Check the path (relative paths "
                                        "start from the current folder).")
