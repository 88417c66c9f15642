"""SIGKILL a mapping run at several points, resume, and get a bit-identical store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _mapjob
import numpy as np
import pytest

from globalflux.errors import StoreError
from globalflux.io.store import MANIFEST_DIR, StoreLayout, completed_blocks, read_manifest

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "tests" / "_mapjob.py"


def snapshot(path: Path) -> dict[str, object]:
    """Every file of a store: bytes, except JSON metadata compared without timestamps."""
    out: dict[str, object] = {}
    for f in sorted(path.rglob("*")):
        if f.is_dir():
            continue
        rel = f.relative_to(path).as_posix()
        if f.name == "zarr.json" or f.name == "manifest.json":
            obj = json.loads(f.read_text())
            _drop_times(obj)
            out[rel] = obj
        else:
            out[rel] = f.read_bytes()
    return out


def _drop_times(obj):
    if isinstance(obj, dict):
        for k in ("history", "created"):
            obj.pop(k, None)
        for v in obj.values():
            _drop_times(v)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    _mapjob.run(path)
    return path


def _start(store: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, str(JOB), str(store)] + (["--resume"] if resume else [])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _run_until(store: Path, resume: bool, at_least: int, timeout: float = 120.0) -> int:
    """Start the job, SIGKILL its whole process group once >= ``at_least`` blocks are
    recorded (or the manifest exists, for 0); return the number recorded at the kill."""
    proc = _start(store, resume)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")
                pytest.fail(f"the job ended before the kill point ({proc.returncode}): {out}")
            if read_manifest(store) is not None:
                n = len(completed_blocks(store))
                if n >= at_least:
                    _kill_group(proc)
                    return n
            time.sleep(0.01)
        pytest.fail("kill point not reached in time")
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    return -1


def _recorded_blocks_are_complete(store: Path, reference: Path) -> int:
    """Every block recorded in the manifest holds exactly the reference's data."""
    import zarr

    layout = StoreLayout.from_json(read_manifest(store)["layout"])
    got = zarr.open_group(str(store), mode="r")
    ref = zarr.open_group(str(reference), mode="r")
    n = 0
    for idx in completed_blocks(store):
        region = layout.region(idx)
        pos = dict(zip(layout.dims, idx))
        for var, vdims in layout.variables:
            if any(pos[d] != 0 for d in layout.dims if d not in vdims):
                continue
            sel = tuple(region[d] for d in vdims)
            np.testing.assert_array_equal(got[var][sel], ref[var][sel],
                                          err_msg=f"block {idx} of {var} recorded but not written")
        n += 1
    return n


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_is_bit_identical(tmp_path, reference):
    store = tmp_path / "run.zarr"
    total = StoreLayout.from_json(read_manifest(reference)["layout"]).nblocks
    seen = []
    # kill right after the store is created, then about a third and two thirds of the way
    for i, at_least in enumerate((0, total // 3, 2 * total // 3)):
        n = _run_until(store, resume=i > 0, at_least=at_least)
        seen.append(n)
        assert n < total, "the run finished before it could be killed"
        assert _recorded_blocks_are_complete(store, reference) == len(completed_blocks(store))
        assert not (store / "zarr.json").read_text().count('"globalflux_complete": "true"')
    assert seen[0] < seen[1] < seen[2] or seen[1] <= seen[2]
    # finish
    _mapjob.run(store, resume=True)
    a, b = snapshot(store), snapshot(reference)
    assert sorted(a) == sorted(b)
    for key in b:
        assert a[key] == b[key], f"{key} differs from the uninterrupted run"
    assert (store / MANIFEST_DIR / "blocks").is_dir()


def test_resume_of_a_complete_store_changes_nothing(tmp_path):
    store = tmp_path / "s.zarr"
    _mapjob.run(store)
    before = snapshot(store)
    _mapjob.run(store, resume=True)
    assert snapshot(store) == before


def test_resume_with_another_recipe_is_refused(tmp_path):
    from globalflux.mapping import map_to_store

    store = tmp_path / "s.zarr"
    ds, land, est = _mapjob.make_inputs()
    map_to_store(None, _mapjob.pieces(ds, land, est), store, attrs=_mapjob.ATTRS, progress=False)
    other = dict(_mapjob.ATTRS, recipe="name: other\nworkflow: test\n")
    with pytest.raises(StoreError, match=r"s\.zarr: was written by another recipe or model "
                       r".*Resume with the same recipe"):
        map_to_store(None, _mapjob.pieces(ds, land, est), store, attrs=other, resume=True,
                     progress=False)


def test_resume_of_a_foreign_folder_is_refused(tmp_path):
    from globalflux.mapping import map_to_store

    store = tmp_path / "s.zarr"
    store.mkdir()
    ds, land, est = _mapjob.make_inputs()
    with pytest.raises(StoreError, match="is not a resumable globalflux store"):
        map_to_store(None, _mapjob.pieces(ds, land, est), store, attrs=_mapjob.ATTRS,
                     resume=True, progress=False)


def test_cli_resume_into_a_run_of_another_recipe_exits_2(tmp_path, capsys, repo_root):
    from globalflux.cli import main
    from globalflux.pipeline import validate
    from globalflux.recipe import dump_recipe

    out = tmp_path / "run"
    out.mkdir()
    other = validate(repo_root / "recipes" / "demo.yaml", ["synthetic.seed=7"])
    (out / "recipe.yaml").write_text(dump_recipe(other))
    (out / "maps").mkdir()
    code = main(["run", str(repo_root / "recipes" / "demo.yaml"), "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{out}: was made by another recipe (name 'demo'" in err
    assert "Resume with the same recipe and --set values" in err
    assert sorted(p.name for p in out.iterdir()) == ["maps", "recipe.yaml"]  # nothing touched
