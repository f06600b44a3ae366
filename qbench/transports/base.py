"""Transports: how a cell's stages reach the process (or device) that runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from qbench.params import NoParams, Params
from qbench.plan import Cell

# How much of a failing stage's traceback (or a crashed stage's stderr) a row keeps: the
# innermost frames and the exception say where it failed; a whole torch traceback does not fit
# a results table.
TRACEBACK_LINES = 20
TRACEBACK_CHARS = 4000


def traceback_tail(text: str) -> str:
    """The last TRACEBACK_LINES non-blank lines of `text` (at most TRACEBACK_CHARS), for the
    row's error_traceback column."""
    # Python 3.11's ^^^~~~ markers under a frame's line point at columns: no room for them
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip().strip("^~")]
    tail = "\n".join(lines[-TRACEBACK_LINES:])
    return tail[-TRACEBACK_CHARS:]


class Transport:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams

    def check(self, params: Params) -> None:
        """Refuse, at plan time and without connecting, parameters that can never work (a
        missing key file, a host that is not one): raise qbench.params.CheckError(field, why)."""

    def run_cell(self, cell: Cell, workdir: Path, params: Params) -> dict[str, Any]:
        """Run prepare then measure; return the merged stage results with status/error."""
        raise NotImplementedError
