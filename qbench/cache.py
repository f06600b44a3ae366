"""The artifact cache: quantized models, trained weights, inputs and reference outputs.

Lives outside git (QBENCH_CACHE_DIR, default ~/.cache/qbench). Each entry is a file named by a
hash of everything that determines it, built once under a file lock (two processes asking for
the same entry wait for one build) and written by atomic rename.

Integrity: beside each entry, NAME.sha256 (sha256sum's format, so `sha256sum -c` checks it in
the entry's folder) records the SHA-256 of the entry and of its NAME.meta.json, written before
the entry appears. Every cache hit re-hashes both: an entry whose bytes changed (tampered with,
truncated, a half-copied cache), or one without a record (written by an older qbench), is not
used but deleted and rebuilt under the lock, and the returned CacheEntry says why (`note`).
This catches corruption and files overwritten in place; someone who can write the cache can
also rewrite the record, so loaders must still not run code from entries (the torch backend
loads weights-only). `verify_file` re-checks a file against a hash recorded earlier, e.g. the
artifact between the prepare and measure processes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qbench.params import file_sha256, stable_hash

log = logging.getLogger(__name__)

SHA256_HEX = 64
# Shortest expected hash verify_file accepts: the 16-digit prefixes in result rows
# (artifact_sha256) are 64 bits, still far beyond a second-preimage search.
MIN_EXPECTED_HEX = 16


class IntegrityError(ValueError):
    """A file's bytes are not those recorded for it (changed, truncated or missing).
    str() is one line naming the file; `actual` is None when the file is missing."""

    def __init__(self, path: Path, expected: str, actual: str | None) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        if actual is None:
            message = f"{path}: missing (expected sha256 {expected[:16]}...)"
        else:
            message = (f"{path}: sha256 {actual[:16]}... does not match the expected "
                       f"{expected[:16]}... (the file changed or was truncated)")  # fmt: skip
        super().__init__(message)


class CacheEntry(tuple[Path, bool]):
    """(path, was_cached), as `cached_file` always returned, plus `note`: None, or one line
    saying why an existing entry was discarded and rebuilt (a failed hash check, no recorded
    hash), for the caller to show (e.g. in the row's notes)."""

    note: str | None

    def __new__(cls, path: Path, cached: bool, note: str | None = None) -> CacheEntry:
        entry = super().__new__(cls, (path, cached))
        entry.note = note
        return entry

    def __getnewargs__(self) -> tuple[Path, bool, str | None]:  # type: ignore[override]
        # tuple's own would pass (path, cached) as one argument: copy and pickle need this
        return self[0], self[1], self.note

    @property
    def path(self) -> Path:
        return self[0]

    @property
    def cached(self) -> bool:
        return self[1]


def cache_root() -> Path:
    root = Path(os.environ.get("QBENCH_CACHE_DIR") or Path.home() / ".cache" / "qbench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def sha256_path(path: Path) -> Path:
    """The record of an entry's (and its metadata's) SHA-256."""
    return path.with_name(path.name + ".sha256")


def read_meta(path: Path) -> dict[str, Any]:
    """What `build` returned when the entry was made ({} if it returned nothing)."""
    meta = meta_path(path)
    return json.loads(meta.read_text()) if meta.exists() else {}


def sha256_of(path: Path) -> str:
    """Full hex SHA-256 of a file, read in chunks."""
    return file_sha256(str(path), SHA256_HEX)


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise IntegrityError (a ValueError, one line) unless the file at `path` has this SHA-256.

    `expected_sha256`: the full hex digest (recorded_sha256, sha256_of) or a prefix of at least
    16 hex digits (a row's artifact_sha256)."""
    expected = expected_sha256.lower()
    if not (
        MIN_EXPECTED_HEX <= len(expected) <= SHA256_HEX and re.fullmatch("[0-9a-f]+", expected)
    ):
        raise ValueError(
            f"expected sha256 must be {MIN_EXPECTED_HEX} to {SHA256_HEX} hex digits, got "
            f"{expected_sha256!r}"
        )
    try:
        actual = sha256_of(path)
    except FileNotFoundError:
        raise IntegrityError(path, expected, None) from None
    if not actual.startswith(expected):
        raise IntegrityError(path, expected, actual)


def _read_record(path: Path) -> dict[str, str] | None:
    """File name -> SHA-256 from an entry's record; None when there is none (or unreadable)."""
    try:
        text = sha256_path(path).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    record = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch("[0-9a-f]{64}", digest):
            return None
        record[name] = digest
    return record


def recorded_sha256(path: Path) -> str | None:
    """The full SHA-256 recorded for a cache entry when it was built (None: no record).
    Hand it to verify_file to check the entry again later, in another process."""
    record = _read_record(path)
    return None if record is None else record.get(path.name)


def _distrust(path: Path) -> str | None:
    """Why the existing entry at `path` must not be used, or None when its bytes and its
    metadata's match the record. A file vanishing mid-check (another process rebuilding it)
    is a reason too: the caller then re-checks under the lock."""
    record = _read_record(path)
    if record is None or path.name not in record:
        return "no recorded sha256 (written by an older qbench, or its record is gone)"
    meta = meta_path(path)
    files = {path.name: path}
    # Metadata is part of the entry (rows and backends read it): it must match as well, and
    # may only exist if it was recorded.
    if meta.exists() or meta.name in record:
        files[meta.name] = meta
    for name, file in files.items():
        expected = record.get(name)
        if expected is None:
            return f"{name} is not in its sha256 record"
        try:
            actual = sha256_of(file)
        except FileNotFoundError:
            return f"{name} is missing"
        if actual != expected:
            return (f"{name} failed its sha256 check (recorded {expected[:16]}..., found "
                    f"{actual[:16]}...: changed or truncated)")  # fmt: skip
    return None


def _remove_entry(path: Path) -> None:
    # The entry first: from here on no reader sees it, whatever is left of its record/meta.
    for file in (path, meta_path(path), sha256_path(path)):
        file.unlink(missing_ok=True)


def cached_file(
    kind: str, key: object, suffix: str, build: Callable[[Path], dict[str, Any] | None]
) -> CacheEntry:
    """The entry for `key`, building it with `build(tmp_path)` if absent or untrusted.

    A dict returned by `build` is kept beside the entry (read_meta); it and the SHA-256 record
    are written before the entry appears, so an entry never exists without them. An existing
    entry is used only if it and its metadata match the record; otherwise it is deleted and
    rebuilt (CacheEntry.note says why). Unpacks as (path, was_cached).
    """
    folder = cache_root() / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stable_hash(key)}{suffix}"
    if path.exists() and _distrust(path) is None:
        return CacheEntry(path, True)
    with open(folder / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        note = None
        if path.exists():
            why = _distrust(path)  # again: another process may have rebuilt it meanwhile
            if why is None:
                return CacheEntry(path, True)
            note = f"cache entry {kind}/{path.name} discarded and rebuilt: {why}"
            log.warning(note)
        # Also clears metadata and a record left by an entry removed by hand: a stale
        # NAME.meta.json that this build does not rewrite would fail every later check.
        _remove_entry(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
        meta_tmp = tmp.with_name(tmp.name + ".meta")
        record_tmp = tmp.with_name(tmp.name + ".sha256")
        try:
            meta = build(tmp)
            lines = [f"{sha256_of(tmp)}  {path.name}"]
            if meta:
                meta_tmp.write_text(json.dumps(meta, default=str))
                lines.append(f"{sha256_of(meta_tmp)}  {meta_path(path).name}")
                meta_tmp.replace(meta_path(path))
            record_tmp.write_text("\n".join(lines) + "\n")
            record_tmp.replace(sha256_path(path))
            tmp.replace(path)
        finally:
            for leftover in (tmp, meta_tmp, record_tmp):
                leftover.unlink(missing_ok=True)
    return CacheEntry(path, False, note)
