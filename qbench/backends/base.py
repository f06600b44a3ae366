"""Backends: runtimes that load an artifact and run it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qbench.params import NoParams, Params


class Session:
    """A loaded artifact. `runner` binds one input so the timed call does nothing else."""

    def runner(self, x: np.ndarray) -> Callable[[], Any]:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray | None:
        """float32 outputs for a batch of float32 inputs; None from a session that computes
        nothing (the null backend), whose accuracy columns then stay empty."""
        raise NotImplementedError

    def inspect(self) -> dict[str, Any]:
        """Row fields describing what really runs (quantized_nodes, compute_nodes, notes)."""
        return {}


class Backend:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    loads: ClassVar[tuple[str, ...]]  # artifact formats
    requires: ClassVar[tuple[str, ...]]  # importable modules this backend needs

    def missing_packages(self) -> list[str]:
        return [m for m in self.requires if find_spec(m) is None]

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this host (a missing package, library or device),
        or None. Called while planning, so it must be cheap; cells get it as their skip
        reason."""
        missing = self.missing_packages()
        if missing:
            return f"needs Python package(s) {', '.join(missing)}, not installed"
        return None

    def version(self) -> str:
        raise NotImplementedError

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        raise NotImplementedError
