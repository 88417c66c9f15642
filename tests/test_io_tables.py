"""Parquet tables round-trip exactly (dtypes, time zones, index, attrs); writes are atomic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from globalflux.errors import InputFileError
from globalflux.io.tables import ParquetCache, file_sha256, read_table, write_table


def _frame() -> pd.DataFrame:
    df = pd.DataFrame({
        "site_id": pd.array(["a", "b", None], dtype="string"),
        "time": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"]).as_unit("ns"),
        "utc": pd.to_datetime(["2020-01-01 10:00", "2020-06-01 00:00", "2021-01-01 00:00"]).tz_localize("UTC"),
        "local": pd.to_datetime(["2020-01-01 10:00", "2020-06-01 00:00", "2021-01-01 00:00"]).tz_localize("Asia/Tokyo"),
        "value": [1.5, np.nan, -2.0],
        "n": pd.array([1, None, 3], dtype="Int64"),
        "n_ports": np.array([1, 2, 3], dtype="int64"),
        "flag": [True, False, True],
        "igbp": pd.Categorical(["DBF", "ENF", "DBF"]),
    }, index=pd.Index([10, 11, 12], name="row"))
    df.attrs = {"source": "test", "aggregation": "daily"}
    return df


def test_round_trip_identical(tmp_path):
    df = _frame()
    p = write_table(df, tmp_path / "sub" / "t.parquet")
    back = read_table(p)
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs == df.attrs
    assert str(back["local"].dtype) == str(df["local"].dtype)


def test_round_trip_canonical_site_table(tmp_path):
    from pathlib import Path

    from globalflux.io.cosore import read_cosore
    from globalflux.sites import cosore_tables

    raw = read_cosore(Path(__file__).parent / "fixtures" / "cosore", cache_dir=False)
    for agg in ("daily", "8day"):
        t = cosore_tables(raw, aggregation=agg)
        p = write_table(t.long, tmp_path / f"{agg}.parquet")
        pd.testing.assert_frame_equal(read_table(p), t.long)
        q = write_table(t.sites, tmp_path / f"{agg}.sites.parquet")
        pd.testing.assert_frame_equal(read_table(q), t.sites)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True, width=64),
                          st.text(max_size=5), st.integers(-2**40, 2**40)), min_size=0, max_size=20))
def test_round_trip_property(tmp_path_factory, rows):
    df = pd.DataFrame(rows, columns=["x", "s", "i"]).astype({"x": "float64", "s": "string", "i": "int64"})
    p = write_table(df, tmp_path_factory.mktemp("h") / "t.parquet")
    pd.testing.assert_frame_equal(read_table(p), df)


def test_failed_write_keeps_old_file(tmp_path):
    p = write_table(_frame(), tmp_path / "t.parquet")
    before = p.read_bytes()
    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot store it
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error
        write_table(bad, p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["t.parquet"]


def test_read_errors(tmp_path):
    with pytest.raises(InputFileError, match="Parquet table not found"):
        read_table(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputFileError, match="cannot read as Parquet"):
        read_table(tmp_path / "junk.parquet")
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(InputFileError, match="is a folder"):
        write_table(_frame(), tmp_path / "dir.parquet")


def test_cache(tmp_path):
    f = tmp_path / "src.bin"
    f.write_bytes(b"abc")
    key = file_sha256(f)
    assert key == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    c = ParquetCache(tmp_path / "cache", "ns-v1")
    assert c.get(key) is None
    c.put(key, _frame())
    pd.testing.assert_frame_equal(c.get(key), _frame())
    (tmp_path / "cache" / "ns-v1" / f"{key}.parquet").write_text("broken")
    assert c.get(key) is None  # a broken entry is dropped, not fatal
