"""Crash-safe, resumable chunked parquet storage for the generations of ONE cell.

Layout: ``root / safe_name(cell_key) / fingerprint / chunk-{index:05d}.parquet`` plus ``manifest.json``.
A chunk file that exists is complete: it is written to a temp file in the same directory, fsynced and
renamed with ``os.replace`` (atomic on POSIX). Still, nothing on disk is trusted blindly: a resume asks
``unusable`` (truncated, short of rows, or not the bytes the manifest recorded) and moves such chunks
aside to be regenerated; readers go through ``verify`` (manifest, sizes, sha256). The fingerprint hashes
everything that determines the outputs, so a config change lands in a fresh directory and never reuses
stale chunks. One writer per cell is assumed (the GPU pool runs one run at a time).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import uuid
from pathlib import Path

import polars as pl

MANIFEST = "manifest.json"
_CHUNK_RE = re.compile(r"chunk-(\d{5,})\.parquet")
_TMP_SUFFIX = ".tmp"
_HINTS = {
    errno.ENOSPC: "the disk is full: free space or point the storage root at a larger volume",
    errno.EDQUOT: "disk quota exceeded: free space or point the storage root elsewhere",
    errno.EACCES: "no permission to write here: check the directory's owner/mode or change the storage root",
    errno.EPERM: "operation not permitted: check the directory's owner/mode or change the storage root",
    errno.EROFS: "read-only file system: point the storage root at a writable location",
}


class ChunkStoreError(RuntimeError):
    """Missing, corrupt or unverifiable chunks (never silently skipped)."""


def safe_name(key: str) -> str:
    """Filesystem-safe, readable and collision-free directory name for a cell key.

    ``"variant=a,condition=b"`` -> ``"variant-a_condition-b-<8 hex of sha256(key)>"``.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("=", "-")).strip("._-")[:80]
    return f"{slug or 'cell'}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:8]}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _os_error(e: OSError, path: Path, action: str) -> OSError:
    """The same kind of OSError, naming the path and saying what to do."""
    hint = _HINTS.get(e.errno or 0, "check the path and the file system")
    return OSError(e.errno, f"{action} failed: {e.strerror or e}; hint: {hint}", str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a same-directory temp file (``O_EXCL``), every byte written,
    fsynced, then ``os.replace``. On ANY failure the temp file is removed and ``path`` is untouched (an
    existing file keeps its old content); an OSError is re-raised with its errno, naming ``path``, the
    cause and what to do."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    fd: int | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        view = memoryview(data)
        while view:  # os.write may write less than asked (and raises ENOSPC/EDQUOT when the disk fills)
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException as e:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _os_error(e, path, "writing") from e
        raise
    _fsync_dir(path.parent)


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """``df`` serialised as parquet in memory (so that file-system errors surface as real OSErrors:
    polars reports a full disk as a ComputeError without errno or path)."""
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def atomic_write_parquet(path: Path, df: pl.DataFrame) -> None:
    """``df`` as a parquet file at ``path``, atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, parquet_bytes(df))


def _fsync_dir(directory: Path) -> None:
    """Persist the rename (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ChunkStore:
    """Chunks of one cell under one fingerprint; see the module docstring for the layout."""

    def __init__(self, root: Path, cell_key: str, fingerprint: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", fingerprint) or fingerprint in (".", ".."):
            raise ValueError(f"fingerprint must be a non-empty [A-Za-z0-9._-] string, got {fingerprint!r}")
        self.root, self.cell_key, self.fingerprint = Path(root), cell_key, fingerprint
        self.directory = self.root / safe_name(cell_key) / fingerprint

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def path(self, index: int) -> Path:
        if index < 0:
            raise ValueError(f"chunk index must be >= 0, got {index}")
        return self.directory / f"chunk-{index:05d}.parquet"

    def done(self, index: int) -> bool:
        """True iff chunk ``index`` was written completely (the file exists only after the atomic rename)."""
        return self.path(index).is_file()

    def indices(self) -> list[int]:
        """Indices of the chunk files present, ascending (temp files ignored)."""
        if not self.directory.is_dir():
            return []
        found = (_CHUNK_RE.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def clean_temp(self, index: int | None = None) -> int:
        """Delete leftover temp files of a crashed write (of one chunk, or all); returns how many."""
        if not self.directory.is_dir():
            return 0
        prefix = f".{self.path(index).name}." if index is not None else "."
        stale = [
            p for p in self.directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(_TMP_SUFFIX)
        ]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def write(self, index: int, df: pl.DataFrame) -> Path:
        """Atomically write chunk ``index`` (replacing it if present); invalidates any manifest."""
        path = self.path(index)
        self.clean_temp(index)
        self._drop_manifest()  # first: a kill after the rename must not leave a disagreeing manifest
        atomic_write_parquet(path, df)
        return path

    def _drop_manifest(self) -> None:
        """Invalidate the manifest (before any chunk changes)."""
        try:
            self.manifest_path.unlink(missing_ok=True)
        except NotADirectoryError:
            pass  # no directory, so no manifest: the write that follows reports the real problem
        except OSError as e:
            raise _os_error(e, self.manifest_path, "removing the stale manifest") from e

    def read(self, index: int) -> pl.DataFrame:
        """One chunk; a corrupt or truncated file raises ChunkStoreError naming it."""
        path = self.path(index)
        try:
            return pl.read_parquet(path)
        except FileNotFoundError as e:
            raise ChunkStoreError(f"missing chunk file {path}") from e
        except (pl.exceptions.PolarsError, OSError, ValueError) as e:
            raise ChunkStoreError(f"corrupt or unreadable chunk file {path}: {e}") from e

    def unusable(self, expected_rows: list[int], sidecar: str | None = None) -> dict[int, str]:
        """Chunks on disk that a resume must NOT reuse, with the reason: unreadable or truncated parquet,
        a row count other than ``expected_rows[index]``, a sha256 that differs from the manifest (when one
        is readable), or a missing ``chunk-NNNNN<sidecar>`` file (when ``sidecar`` is given)."""
        try:
            m = self.manifest()
        except (OSError, ValueError):
            m = None  # rewritten by the next finalize
        recorded = {}
        if isinstance(m, dict) and m.get("fingerprint") == self.fingerprint:
            recorded = {c.get("file"): c.get("sha256") for c in m.get("chunks") or [] if isinstance(c, dict)}
        bad = {}
        for i in self.indices():
            if i >= len(expected_rows):
                continue
            path = self.path(i)
            try:
                rows = self.read(i).height
            except ChunkStoreError as e:
                bad[i] = str(e)
                continue
            if rows != expected_rows[i]:
                bad[i] = f"{path} has {rows} rows, expected {expected_rows[i]} (incomplete chunk)"
            elif path.name in recorded and file_sha256(path) != recorded[path.name]:
                bad[i] = f"{path} sha256 differs from the manifest"
            elif sidecar is not None and not path.with_name(f"chunk-{i:05d}{sidecar}").is_file():
                bad[i] = f"{path} has no {path.with_name(f'chunk-{i:05d}{sidecar}').name}"
        return bad

    def quarantine(self, index: int) -> Path:
        """Move a bad chunk file aside (``chunk-NNNNN.parquet.corrupt``, kept for inspection) so that it is
        regenerated; returns the new path."""
        path = self.path(index)
        dest = path.with_name(path.name + ".corrupt")
        self._drop_manifest()
        try:
            os.replace(path, dest)
        except OSError as e:
            raise _os_error(e, path, "moving a corrupt chunk aside") from e
        return dest

    def missing(self, expected_chunks: int) -> list[int]:
        present = set(self.indices())
        return [i for i in range(expected_chunks) if i not in present]

    def read_all(self, expected_chunks: int | None = None) -> pl.DataFrame:
        """All chunks in index order (only ``0..expected_chunks-1`` if given, and then all must exist)."""
        if expected_chunks is None:
            indices = self.indices()
        else:
            gone = self.missing(expected_chunks)
            if gone:
                raise ChunkStoreError(f"{self.directory}: missing chunks {gone} of {expected_chunks}")
            indices = list(range(expected_chunks))
        frames = [self.read(i) for i in indices]
        return pl.concat(frames, how="vertical") if frames else pl.DataFrame()

    def finalize(self, n_chunks: int, meta: dict) -> dict:
        """Write ``manifest.json`` (chunk count, rows, per-chunk bytes/rows/sha256, meta) atomically."""
        gone = self.missing(n_chunks)
        if gone:
            raise ChunkStoreError(f"{self.directory}: cannot finalize, missing chunks {gone} of {n_chunks}")
        chunks = [
            {
                "index": i,
                "file": self.path(i).name,
                "bytes": self.path(i).stat().st_size,
                "rows": self.read(i).height,
                "sha256": file_sha256(self.path(i)),
            }
            for i in range(n_chunks)
        ]
        manifest = {
            "version": 1,
            "cell_key": self.cell_key,
            "fingerprint": self.fingerprint,
            "n_chunks": n_chunks,
            "rows": sum(c["rows"] for c in chunks),
            "chunks": chunks,
            "meta": meta,
        }
        data = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode("utf-8")
        atomic_write_bytes(self.manifest_path, data)
        self.clean_temp()
        return manifest

    def manifest(self) -> dict | None:
        """The parsed manifest, or None if the cell was never finalized."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def verify(self) -> list[str]:
        """Problems found (empty = complete): a valid manifest, every chunk with its size and sha256."""
        try:
            m = self.manifest()
        except (OSError, ValueError) as e:
            return [f"unreadable manifest {self.manifest_path}: {e}"]
        if m is None:
            return [f"not finalized: no {self.manifest_path} ({len(self.indices())} chunk files present)"]
        if m.get("fingerprint") != self.fingerprint or not isinstance(m.get("chunks"), list):
            return [f"manifest {self.manifest_path} does not belong to fingerprint {self.fingerprint}"]
        return [p for c in m["chunks"] for p in self._check_chunk(c)]

    def _check_chunk(self, c: dict) -> list[str]:
        path = self.directory / str(c.get("file"))
        if not path.is_file():
            return [f"chunk {c.get('index')} missing: {path}"]
        size = path.stat().st_size
        if size != c.get("bytes"):
            return [f"chunk {c.get('index')} size {size} != manifest {c.get('bytes')}: {path}"]
        if file_sha256(path) != c.get("sha256"):
            return [f"chunk {c.get('index')} sha256 differs from the manifest: {path}"]
        return []

    def is_complete(self) -> bool:
        """True iff the manifest exists and every recorded chunk verifies."""
        return not self.verify()
