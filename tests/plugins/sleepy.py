"""ONNX Runtime with a fixed wait added to every timed call: a real backend whose cells are
slower by a known amount, for tests of what qbench concludes from timings (the summary's
interleaved confirmation) that must not depend on this machine's speed.

QBENCH_SLEEPY_EXTRA_MS adds a busy wait of that many milliseconds to every call (CPU work on
the measured thread, as a slower kernel would be): benchmarks/regression_detection.py injects
a calibrated slowdown into real cells with it, without changing their cell ids.

Loaded in every process of a run through QBENCH_PLUGINS=tests.plugins.sleepy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.backends.base import Backend, Session
from qbench.backends.onnxruntime import OnnxRuntimeBackend, OrtParams
from qbench.params import Params
from qbench.plugins import backends

EXTRA_ENV = "QBENCH_SLEEPY_EXTRA_MS"


class SleepyParams(OrtParams):
    wait_ms: float = Field(default=2.0, ge=0, description="wait added to every timed call")


class _SleepySession(Session):
    def __init__(self, inner: Session, wait_s: float) -> None:
        self.inner, self.wait_s = inner, wait_s

    def runner(self, x: Any) -> Callable[[], Any]:
        run, wait = self.inner.runner(x), self.wait_s
        spin = float(os.environ.get(EXTRA_ENV, "0") or 0) / 1000
        clock = time.perf_counter

        def slow() -> Any:
            if wait:
                time.sleep(wait)
            if spin:
                end = clock() + spin
                while clock() < end:
                    pass
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
