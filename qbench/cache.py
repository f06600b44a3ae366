"""The artifact cache: quantized models, trained weights, inputs and reference outputs.

Lives outside git (QBENCH_CACHE_DIR, default ~/.cache/qbench). Each entry is a file named by a
hash of everything that determines it, built once under a file lock (two processes asking for
the same entry wait for one build) and written by atomic rename.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from qbench.params import stable_hash


def cache_root() -> Path:
    root = Path(os.environ.get("QBENCH_CACHE_DIR") or Path.home() / ".cache" / "qbench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def cached_file(
    kind: str, key: object, suffix: str, build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """Path of the entry for `key`, building it with `build(tmp_path)` if absent.

    Returns (path, was_cached).
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
            build(tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path, False
