"""Transports: how a cell's stages reach the process (or device) that runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from qbench.params import NoParams, Params
from qbench.plan import Cell


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
