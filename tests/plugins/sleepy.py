"""ONNX Runtime with a fixed wait added to every timed call: a real backend whose cells are
slower by a known amount, for tests of what qbench concludes from timings (the summary's
interleaved confirmation) that must not depend on this machine's speed.

Loaded in every process of a run through QBENCH_PLUGINS=tests.plugins.sleepy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.backends.base import Backend, Session
from qbench.backends.onnxruntime import OnnxRuntimeBackend, OrtParams
from qbench.params import Params
from qbench.plugins import backends


class SleepyParams(OrtParams):
    wait_ms: float = Field(default=2.0, ge=0, description="wait added to every timed call")


class _SleepySession(Session):
    def __init__(self, inner: Session, wait_s: float) -> None:
        self.inner, self.wait_s = inner, wait_s

    def runner(self, x: Any) -> Callable[[], Any]:
        run, wait = self.inner.runner(x), self.wait_s

        def slow() -> Any:
            time.sleep(wait)
            return run()

        return slow

    def predict(self, x: Any) -> Any:
        return self.inner.predict(x)

    def inspect(self) -> dict[str, Any]:
        return self.inner.inspect()


@backends.register
class SleepyOnnxRuntime(Backend):
    name = "sleepy_onnxruntime"
    description = "test backend: ONNX Runtime plus a fixed wait in every timed call"
    Params = SleepyParams
    loads = ("onnx",)
    requires = ("onnxruntime",)

    def version(self) -> str:
        return OnnxRuntimeBackend().version()

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, SleepyParams)
        inner_params = OrtParams(graph_optimization=params.graph_optimization)
        inner = OnnxRuntimeBackend().open(artifact, fmt, threads, inner_params)
        return _SleepySession(inner, params.wait_ms / 1000)
