"""globalflux.io.store: region writes, the manifest, completion, errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from globalflux.errors import InputFileError, StoreError
from globalflux.io.store import (
    MANIFEST_DIR,
    StoreLayout,
    completed_blocks,
    finalize_store,
    is_complete,
    open_dataset,
    prepare_store,
    read_manifest,
    write_block,
    write_dataset,
)


def template(ny=10, nx=12):
    import dask.array as dsa

    return xr.Dataset(
        {
            "v": (("time", "y", "x"), dsa.zeros((3, ny, nx), chunks=(1, 4, 5), dtype="f4")),
            "s": (("y", "x"), dsa.zeros((ny, nx), chunks=(4, 5), dtype="f4")),
        },
        coords={"time": np.arange(3), "y": np.arange(ny), "x": np.arange(nx)},
        attrs={"title": "t"},
    )


def test_layout_from_dataset_and_regions():
    lay = StoreLayout.from_dataset(template())
    assert lay.dims == ("time", "y", "x") and lay.chunks == (1, 4, 5)
    assert lay.numblocks == (3, 3, 3) and lay.nblocks == 27
    assert lay.region((2, 2, 2)) == {"time": slice(2, 3), "y": slice(8, 10), "x": slice(10, 12)}
    assert StoreLayout.from_json(lay.to_json()) == lay


def test_block_recorded_only_after_write_then_finalize(tmp_path):
    path = tmp_path / "s.zarr"
    lay, done = prepare_store(path, template(), fingerprint="abc")
    assert done == set() and read_manifest(path)["fingerprint"] == "abc"
    assert not is_complete(path)
    rng = np.random.default_rng(0)
    full_v = rng.random((3, 10, 12)).astype("f4")
    full_s = rng.random((10, 12)).astype("f4")
    for flat in range(lay.nblocks):
        idx = lay.block_index(flat)
        r = lay.region(idx)
        write_block(path, lay, idx, {"v": full_v[r["time"], r["y"], r["x"]],
                                     "s": full_s[r["y"], r["x"]]})
        assert idx in completed_blocks(path)
        if flat == 5:
            with pytest.raises(StoreError, match=r"21 of 27 blocks are not written\. Run again "
                                                 r"with --resume"):
                finalize_store(path, lay)
    finalize_store(path, lay)
    assert is_complete(path)
    ds = open_dataset(path)
    np.testing.assert_array_equal(ds["v"].values, full_v)
    np.testing.assert_array_equal(ds["s"].values, full_s)
    assert ds.attrs["globalflux_complete"] == "true" and ds.attrs["title"] == "t"
    assert (path / "zarr.json").read_text().count("consolidated_metadata")


def test_wrong_block_shape_is_refused_and_not_recorded(tmp_path):
    path = tmp_path / "s.zarr"
    lay, _ = prepare_store(path, template(), fingerprint="abc")
    with pytest.raises(StoreError, match=r"block \(0, 0, 0\) of 'v' has shape \(2, 2\)"):
        write_block(path, lay, (0, 0, 0), {"v": np.zeros((2, 2)), "s": np.zeros((4, 5))})
    assert completed_blocks(path) == set()


def test_resume_checks(tmp_path):
    path = tmp_path / "s.zarr"
    prepare_store(path, template(), fingerprint="abc")
    with pytest.raises(StoreError, match=r"s\.zarr: store exists"):
        prepare_store(path, template(), fingerprint="abc")
    with pytest.raises(StoreError, match=r"was written by another recipe or model"):
        prepare_store(path, template(), fingerprint="xyz", resume=True)
    with pytest.raises(StoreError, match=r"has another layout"):
        prepare_store(path, template(ny=11), fingerprint="abc", resume=True)
    # a killed Zarr write leaves *.partial files: resume removes them
    (path / "v" / "c").mkdir(parents=True, exist_ok=True)
    (path / "v" / "c" / "junk.partial").write_bytes(b"x")
    lay, done = prepare_store(path, template(), fingerprint="abc", resume=True)
    assert done == set() and not list(path.rglob("*.partial"))
    assert (path / MANIFEST_DIR / "manifest.json").is_file()


def test_markers_of_a_killed_writer_are_swept_on_resume_and_finalize(tmp_path):
    """A process killed between writing a block marker's temp file and ``os.replace`` leaves
    ``.<block>.<pid>.tmp`` in the manifest: resume and finalize delete it, and it never counts as
    a block (CI once found one left in a finished store)."""
    path = tmp_path / "s.zarr"
    lay, _ = prepare_store(path, template(), fingerprint="abc")
    blocks = path / MANIFEST_DIR / "blocks"
    (blocks / ".2.0.1.28711.tmp").write_text("")
    (path / MANIFEST_DIR / ".manifest.json.28711.tmp").write_text("{")
    assert completed_blocks(path) == set()
    _, done = prepare_store(path, template(), fingerprint="abc", resume=True)
    assert done == set()
    assert sorted(p.name for p in (path / MANIFEST_DIR).rglob("*")) == ["blocks", "manifest.json"]
    # and one left during the run that finishes the store (a worker killed and its task rerun)
    for flat in range(lay.nblocks):
        idx = lay.block_index(flat)
        r = lay.region(idx)
        write_block(path, lay, idx, {"v": np.ones((r["time"].stop - r["time"].start,
                                                   r["y"].stop - r["y"].start,
                                                   r["x"].stop - r["x"].start), "f4"),
                                     "s": np.ones((r["y"].stop - r["y"].start,
                                                   r["x"].stop - r["x"].start), "f4")})
        if flat == 3:
            (blocks / ".0.0.3.4242.tmp").write_text("")
    finalize_store(path, lay)
    assert not [p for p in (path / MANIFEST_DIR).rglob("*") if p.name.endswith(".tmp")]
    assert len(completed_blocks(path)) == lay.nblocks


def test_write_dataset_and_open_errors(tmp_path):
    ds = template().compute()
    write_dataset(ds, tmp_path / "a.zarr")
    with pytest.raises(StoreError, match="a.zarr: store exists"):
        write_dataset(ds, tmp_path / "a.zarr")
    with pytest.raises(InputFileError, match="nope.zarr: store not found"):
        open_dataset(tmp_path / "nope.zarr")
    (tmp_path / "bad.zarr").mkdir()
    with pytest.raises(StoreError, match="bad.zarr: cannot open as Zarr"):
        open_dataset(tmp_path / "bad.zarr")


def test_numeric_variables_use_lz4_and_keep_their_fill(tmp_path):
    """Cubes/maps are read-bound: numeric variables get Blosc LZ4 + shuffle unless they name a
    compressor, and other encoding (the _FillValue) is kept."""
    import numpy as np
    import xarray as xr
    import zarr

    from globalflux.io.store import open_dataset, write_dataset

    ds = xr.Dataset({"a": (("y", "x"), np.arange(12, dtype="float32").reshape(3, 4)),
                     "z": (("y", "x"), np.full((3, 4), -1, dtype="int16"))})
    ds["z"].encoding["_FillValue"] = -1
    write_dataset(ds, tmp_path / "s.zarr")
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for name in ("a", "z"):
        blosc = [c for c in g[name].metadata.codecs if type(c).__name__ == "BloscCodec"]
        assert blosc and blosc[0].cname.value == "lz4", g[name].metadata.codecs
    assert g["z"].attrs["_FillValue"] == -1  # xarray keeps the CF fill as an attribute
    back = open_dataset(tmp_path / "s.zarr")
    # integer layers keep their dtype; the fill value stays in the encoding (issue 14)
    assert back["z"].dtype == np.int16 and back["z"].encoding["_FillValue"] == -1
    assert (back["z"].values == -1).all()
    np.testing.assert_array_equal(back["a"].values, ds["a"].values)
