"""Executors: decide where and in what order cells run; yield one result per cell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from qbench.params import NoParams, Params
from qbench.plan import Cell


class Executor:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams

    def execute(
        self, cells: list[Cell], workroot: Path, params: Params
    ) -> Iterator[tuple[Cell, dict[str, Any]]]:
        raise NotImplementedError
