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


def _fail_on_store_paths(monkeypatch, store: ChunkStore, name: str, code: int, after: int = 0) -> list[int]:
    """Make ``os.<name>`` fail with ``code`` for the store's files, as the kernel would (root included):
    ``after`` bytes still reach the disk first for ``write`` (a disk that fills up mid-chunk)."""
    real = getattr(chunkstore.os, name)
    fds: list[int] = []

    def fake(*args, **kwargs):
        target = args[0]
        if name == "open" and str(target).startswith(str(store.directory)) and str(target).endswith(".tmp"):
            if code:
                raise OSError(code, os.strerror(code), str(target))
            fds.append(fd := real(*args, **kwargs))
            return fd
        if name == "write" and target in fds:
            if after:
                real(target, bytes(args[1])[:after])
            raise OSError(code, os.strerror(code))
        if name == "fsync" and target in fds:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(chunkstore.os, name, fake)
    if name != "open":  # track the temp file descriptors so only the store's writes fail
        monkeypatch.setattr(chunkstore.os, "open", _tracking_open(chunkstore.os.open, store, fds))
    return fds


def _tracking_open(real, store: ChunkStore, fds: list[int]):
    def fake(path, *args, **kwargs):
        fd = real(path, *args, **kwargs)
        if str(path).startswith(str(store.directory)) and str(path).endswith(".tmp"):
            fds.append(fd)
        return fd

    return fake


@pytest.mark.parametrize(
    ("stage", "code", "kind", "hint"),
    [
        ("open", errno.EACCES, PermissionError, "no permission"),  # a directory the user cannot write
        ("open", errno.EROFS, OSError, "read-only file system"),
        ("write", errno.ENOSPC, OSError, "disk is full"),  # the disk fills up half-way through the chunk
        ("write", errno.EDQUOT, OSError, "quota"),
        ("fsync", errno.ENOSPC, OSError, "disk is full"),  # delayed allocation: ENOSPC only at fsync
        ("fsync", errno.EIO, OSError, "check the path"),
    ],
)
def test_write_failures_name_path_and_cause_and_leave_nothing(store, monkeypatch, stage, code, kind, hint):
    """Simulated at the os level, so the test means the same as root (which ignores file modes): the
    OSError keeps its errno, names the chunk path, the cause and a hint; no temp file or partial chunk
    remains, an older version of the chunk survives intact, and the store still works afterwards."""
    store.write(0, chunk(0))
    old = store.path(0).read_bytes()
    store.finalize(1, {})
    _fail_on_store_paths(monkeypatch, store, stage, code, after=100 if stage == "write" else 0)
    for index in (0, 1):  # rewriting a finished chunk, and writing a new one
        with pytest.raises(kind) as err:
            store.write(index, chunk(9))
        assert err.value.errno == code and err.value.filename == str(store.path(index))
        text = str(err.value)
        assert str(store.path(index)) in text and os.strerror(code) in text and hint in text
        assert sorted(p.name for p in store.directory.iterdir()) == ["chunk-00000.parquet"]
    assert store.path(0).read_bytes() == old and not store.done(1)
    monkeypatch.undo()
    store.write(1, chunk(1))
    assert store.read_all(2)["example_id"].to_list() == [0, 0, 0, 1, 1, 1]


def test_unwritable_directory_gives_clear_error(store, monkeypatch):
    """A real 0o500 directory for a normal user; as root (file modes ignored) the kernel's EACCES is
    simulated at ``os.open``, so the assertion is the same either way."""
    store.directory.mkdir(parents=True)
    store.directory.chmod(0o500)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        _fail_on_store_paths(monkeypatch, store, "open", errno.EACCES)
    try:
        with pytest.raises(PermissionError, match="permission") as err:
            store.write(0, chunk(0))
        assert str(store.path(0)) in str(err.value) and err.value.errno == errno.EACCES
        assert list(store.directory.iterdir()) == []
    finally:
        store.directory.chmod(0o700)


def test_uncreatable_directory_names_the_chunk(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = ChunkStore(blocker, CELL, "fp1")
    with pytest.raises(OSError) as err:
        store.write(0, chunk(0))
    assert str(store.path(0)) in str(err.value) and "writing failed" in str(err.value)


def test_a_full_disk_during_parquet_serialisation_is_an_oserror(tmp_path, monkeypatch):
    """polars reports a full disk as a ComputeError without errno or path; chunks (and the IO manager's
    tables) are serialised in memory first, so the OSError comes from the file write itself."""
    path = tmp_path / "t.parquet"
    chunkstore.atomic_write_parquet(path, chunk(0))
    assert pl.read_parquet(path).equals(chunk(0))
    real = chunkstore.os.write
    monkeypatch.setattr(
        chunkstore.os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space"))
    )
    with pytest.raises(OSError, match="disk is full") as err:
        chunkstore.atomic_write_parquet(path, chunk(1))
    assert err.value.errno == errno.ENOSPC and str(path) in str(err.value)
    monkeypatch.setattr(chunkstore.os, "write", real)
    assert pl.read_parquet(path).equals(chunk(0)) and sorted(p.name for p in tmp_path.iterdir()) == [
        "t.parquet"
    ]


def test_interrupted_write_leaves_no_temp_file(store, monkeypatch):
    """Not only OSErrors: a KeyboardInterrupt mid-write also removes the temp file."""

    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(chunkstore.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write(0, chunk(0))
    assert list(store.directory.iterdir()) == []


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


def test_unusable_chunks_are_found_and_moved_aside(store):
    """What a resume refuses to reuse: a truncated file, a file with too few rows, a chunk whose bytes
    differ from the manifest, a chunk without its sidecar; quarantine moves each aside for regeneration."""
    for k in range(4):
        store.write(k, chunk(k))
        (store.directory / f"chunk-{k:05d}.hooks.json").write_text("[]")
    store.finalize(4, {})
    assert store.unusable([3] * 4, ".hooks.json") == {}
    data = store.path(0).read_bytes()
    store.path(0).write_bytes(data[: len(data) // 2])  # truncated: not a parquet file any more
    store.path(1).write_bytes(b"")  # an empty file
    (store.directory / "chunk-00002.hooks.json").unlink()
    bad = store.unusable([3] * 4, ".hooks.json")
    assert sorted(bad) == [0, 1, 2]
    assert str(store.path(0)) in bad[0] and "corrupt" in bad[0] and "hooks.json" in bad[2]
    assert store.unusable([3, 3, 3, 4])[3].endswith("has 3 rows, expected 4 (incomplete chunk)")
    moved = store.quarantine(0)
    assert moved.name == "chunk-00000.parquet.corrupt" and moved.read_bytes() == data[: len(data) // 2]
    assert not store.done(0) and not store.manifest_path.exists() and store.indices() == [1, 2, 3]
    # a valid parquet file with other content than the manifest recorded
    other = ChunkStore(store.root, "other-cell", "fp1")
    other.write(0, chunk(0))
    other.finalize(1, {})
    chunkstore.atomic_write_parquet(other.path(0), chunk(5))
    assert "sha256 differs from the manifest" in other.unusable([3])[0]
