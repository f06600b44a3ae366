"""The artifact cache: quantized models, trained weights, inputs and reference outputs.

Lives outside git (QBENCH_CACHE_DIR, default ~/.cache/qbench). Each entry is a file named by a
hash of everything that determines it, built once under a file lock (two processes asking for
the same entry wait for one build) and written by atomic rename.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qbench.params import stable_hash


def cache_root() -> Path:
    root = Path(os.environ.get("QBENCH_CACHE_DIR") or Path.home() / ".cache" / "qbench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def read_meta(path: Path) -> dict[str, Any]:
    """What `build` returned when the entry was made ({} if it returned nothing)."""
    meta = meta_path(path)
    return json.loads(meta.read_text()) if meta.exists() else {}


def cached_file(
    kind: str, key: object, suffix: str, build: Callable[[Path], dict[str, Any] | None]
) -> tuple[Path, bool]:
    """Path of the entry for `key`, building it with `build(tmp_path)` if absent.

    A dict returned by `build` is kept beside the entry (read_meta) and written before the
    entry appears, so an entry never exists without its metadata. Returns (path, was_cached).
    """
    folder = cache_root() / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stable_hash(key)}{suffix}"
    if path.exists():
        return path, True
    with open(folder / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():  # built by another process while we waited
            return path, True
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
        try:
            meta = build(tmp)
            if meta:
                meta_tmp = tmp.with_name(tmp.name + ".meta")
                meta_tmp.write_text(json.dumps(meta, default=str))
                meta_tmp.replace(meta_path(path))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path, False
