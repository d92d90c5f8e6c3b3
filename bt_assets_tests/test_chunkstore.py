"""ChunkStore: atomic chunk writes, resume, fingerprint isolation, corruption and manifest checks."""

from __future__ import annotations

import errno
import json
import os

import polars as pl
import pytest

from bt_assets.lib import chunkstore
from bt_assets.lib.chunkstore import ChunkStore, ChunkStoreError, safe_name

CELL = "variant=baseline_think_newline,condition=targeted_ablation"


def chunk(k: int, rows: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "example_id": [k] * rows,
            "sample_id": list(range(rows)),
            "completion": [f"text {k}-{s}" for s in range(rows)],
        }
    )


@pytest.fixture
def store(tmp_path) -> ChunkStore:
    return ChunkStore(tmp_path, CELL, "fp1")


def test_safe_name_is_safe_readable_and_injective(tmp_path):
    name = safe_name(CELL)
    assert name.startswith("variant-baseline_think_newline_condition-targeted_ablation-")
    assert all(c.isalnum() or c in "._-" for c in name)
    assert safe_name("a=b") != safe_name("a-b") and safe_name("a=b") == safe_name("a=b")
    assert safe_name("..") not in ("", ".", "..") and "/" not in safe_name("../../etc")
    with pytest.raises(ValueError, match="fingerprint"):
        ChunkStore(tmp_path, CELL, "../x")


def test_layout_and_round_trip(store, tmp_path):
    path = store.write(0, chunk(0))
    assert path == tmp_path / safe_name(CELL) / "fp1" / "chunk-00000.parquet"
    assert store.read(0).equals(chunk(0))


def test_resume_done_only_for_written_chunks(store):
    assert not store.done(0) and store.read_all().height == 0
    store.write(0, chunk(0))
    store.write(2, chunk(2))
    assert [store.done(k) for k in range(3)] == [True, False, True]
    assert store.missing(3) == [1]
    with pytest.raises(ChunkStoreError, match=r"missing chunks \[1\] of 3"):
        store.read_all(3)
    assert store.read_all()["example_id"].to_list() == [0, 0, 0, 2, 2, 2]
    store.write(1, chunk(1))
    assert store.read_all(3)["example_id"].to_list() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_leftover_temp_file_is_ignored_and_cleaned(store):
    store.write(0, chunk(0))
    crashed = store.directory / ".chunk-00001.parquet.abc123.tmp"
    crashed.write_bytes(b"PAR1 half a chunk")
    other = store.directory / ".chunk-00002.parquet.def456.tmp"
    other.write_bytes(b"junk")
    assert not store.done(1) and store.indices() == [0]
    assert store.read_all().equals(chunk(0))
    store.write(1, chunk(1))
    assert not crashed.exists() and other.exists()  # a write cleans its own chunk's leftovers
    store.write(2, chunk(2))
    store.finalize(3, {})
    assert [p.name for p in store.directory.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("code", "kind", "hint"),
    [
        (errno.ENOSPC, OSError, "disk is full"),
        (errno.EACCES, PermissionError, "no permission"),
        (errno.EROFS, OSError, "read-only file system"),
    ],
)
def test_failed_replace_leaves_nothing_and_names_path(store, monkeypatch, code, kind, hint):
    def fail(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(chunkstore.os, "replace", fail)
    with pytest.raises(kind) as err:
        store.write(0, chunk(0))
    assert err.value.errno == code
    assert str(store.path(0)) in str(err.value) and hint in str(err.value)
    assert not store.done(0) and list(store.directory.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_directory_gives_clear_error(store):
    store.directory.mkdir(parents=True)
    store.directory.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="permission") as err:
            store.write(0, chunk(0))
        assert str(store.path(0)) in str(err.value)
    finally:
        store.directory.chmod(0o700)


def test_fingerprint_and_cell_isolation(store, tmp_path):
    store.write(0, chunk(0))
    assert not ChunkStore(tmp_path, CELL, "fp2").done(0)
    assert not ChunkStore(tmp_path, "variant=baseline_think_newline,condition=baseline", "fp1").done(0)
    assert ChunkStore(tmp_path, CELL, "fp1").done(0)


def test_manifest_and_verification(store):
    for k in range(3):
        store.write(k, chunk(k, rows=k + 1))
    assert store.verify()[0].startswith("not finalized") and not store.is_complete()
    manifest = store.finalize(3, {"model_id": "demo", "seed": 42})
    assert manifest["rows"] == 6 and manifest["n_chunks"] == 3
    on_disk = json.loads(store.manifest_path.read_text())
    assert on_disk == manifest and on_disk["meta"] == {"model_id": "demo", "seed": 42}
    assert [c["rows"] for c in on_disk["chunks"]] == [1, 2, 3]
    assert store.verify() == [] and store.is_complete()
    store.write(1, chunk(9))  # rewriting a chunk invalidates the manifest
    assert not store.manifest_path.exists() and not store.is_complete()


def test_finalize_refuses_missing_chunks(store):
    store.write(0, chunk(0))
    with pytest.raises(ChunkStoreError, match=r"missing chunks \[1, 2\]"):
        store.finalize(3, {})


def test_truncated_and_altered_chunks_are_detected(store):
    for k in range(2):
        store.write(k, chunk(k))
    store.finalize(2, {})
    path = store.path(1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = store.verify()
    assert len(problems) == 1 and "size" in problems[0] and str(path) in problems[0]
    with pytest.raises(ChunkStoreError, match="corrupt") as err:
        store.read_all(2)
    assert str(path) in str(err.value)
    path.write_bytes(data[:-8] + bytes(8))  # same size, different bytes
    assert "sha256" in store.verify()[0] and not store.is_complete()


def test_unreadable_manifest_is_reported(store):
    store.write(0, chunk(0))
    store.finalize(1, {})
    store.manifest_path.write_text("{not json")
    assert "unreadable manifest" in store.verify()[0]
    store.manifest_path.write_text(json.dumps({"fingerprint": "other", "chunks": []}))
    assert "does not belong" in store.verify()[0]
