"""Run cells one after another on this machine, each through its device's transport."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qbench.executors.base import Executor
from qbench.params import Params
from qbench.plan import Cell
from qbench.plugins import executors, load_all


def cell_workdir(root: Path, index: int, cell: Cell) -> Path:
    return root / f"{index:04d}-{re.sub(r'[^A-Za-z0-9_.=-]+', '_', cell.cell_id)[:120]}"


@executors.register
class LocalExecutor(Executor):
    name = "local"
    description = "cells one at a time, in order, never two measurements at once"

    def execute(
        self, cells: list[Cell], workroot: Path, params: Params
    ) -> Iterator[tuple[Cell, dict[str, Any]]]:
        fam = load_all()
        for index, cell in enumerate(cells):
            transport = fam.transports.get(cell.transport)()
            tparams = transport.Params(**cell.transport_params)
            yield cell, transport.run_cell(cell, cell_workdir(workroot, index, cell), tparams)
