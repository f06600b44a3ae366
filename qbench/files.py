"""Reading and writing the files a user names, without hanging or leaving half a file.

A FIFO or a device given where a file is expected blocks `open()` until a writer appears (or
streams forever, /dev/zero): only regular files are opened, tested on a non-blocking open so
nothing can be swapped in between the test and the read. Outputs are written to a temporary
file beside their place and renamed over it once whole, so a full disk or a kill leaves the
previous file or none, never a truncated page.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


class NotRegularFile(OSError):
    """A path that is a FIFO, socket, device or folder where a regular file was expected."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file (NotRegularFile names
    what it is otherwise; FileNotFoundError and the like as open() raises them). Opened
    non-blocking: a FIFO's open would otherwise wait for a writer that never comes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"{_kind(mode)}, not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`, reading at most `limit` + 1 of them (a caller
    that gets more than `limit` knows the file is too large without reading it whole)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        return fh.read() if limit is None else fh.read(limit + 1)


def is_regular(path: str | Path) -> bool:
    """`path` is a regular file (following symlinks), tested without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` (its folders made) through a temporary file in the same folder
    that replaces it once whole. OSError, with `filename` set to `path`, where it cannot be
    written (a full disk, no permission); the temporary file is removed then."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp makes it 0600; a report is for reading
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What to do about a file that cannot be written or read, by errno.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space, or write elsewhere",
    errno.EFBIG: "the file outgrew what this process may write (ulimit -f): raise the "
    "limit, or write elsewhere",
    errno.EACCES: "no permission: choose a folder you can write, or fix its permissions",
    errno.EPERM: "not permitted: choose a folder you can write, or fix its permissions",
    errno.EROFS: "a read-only file system: write elsewhere",
    errno.ENOTDIR: "a file stands where a folder is needed: move it, or choose another path",
    errno.EEXIST: "a file stands where a folder is needed: move it, or choose another path",
    errno.EISDIR: "a folder stands where a file is needed: choose a file name",
    errno.EIO: "an input/output error: check the disk",
}


def describe_os_error(exc: OSError, where: str | Path | None = None) -> str:
    """One line for an OSError: the path (the error's own, else `where`), the system's reason
    and what to do."""
    path = exc.filename if exc.filename is not None else where
    reason = exc.strerror or str(exc)
    advice = _ADVICE.get(exc.errno or 0, "")
    text = f"{path}: {reason}" if path is not None else reason
    return f"{text}; {advice}" if advice else text
