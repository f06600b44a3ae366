"""The null backend: a system under test that only waits (MLPerf's "null SUT").

Each timed call sleeps (or spins) for a configured time and computes nothing, so its latency
is known in advance. Users calibrate regression detection with it on their own machine: how
much does a known 10% change move the figures, and how often does no change look like one?

QBENCH_NULL_SLOWDOWN (a factor, e.g. 1.10) scales every wait: the injected slowdown of the
detection benchmark and of `qbench compare`'s tests. A row measured with it says so in its
notes, and the cell id stays the same, as it would for a real regression.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.backends.base import Backend, Session
from qbench.inputs import Inputs
from qbench.params import Params
from qbench.plugins import backends

SLOWDOWN_ENV = "QBENCH_NULL_SLOWDOWN"


class NullParams(Params):
    sleep_ms: float = Field(default=2.0, ge=0, description="time each call waits, ms")
    jitter_ms: float = Field(
        default=0.0,
        ge=0,
        description="extra wait drawn uniformly from [0, jitter_ms) per call (seeded): "
        "synthetic noise on top of the OS's own",
    )
    wait: Literal["sleep", "spin"] = Field(
        default="sleep",
        description="sleep: time.sleep (the OS adds its timer slack); spin: busy-wait on the "
        "clock (exact, but holds a core)",
    )
    seed: int = Field(default=0, description="seed of the jitter")


def slowdown_factor() -> float:
    """The injected slowdown from QBENCH_NULL_SLOWDOWN (1.0 when unset)."""
    text = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not text:
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        raise ValueError(f"{SLOWDOWN_ENV}={text!r}: expected a positive number") from None
    if not factor > 0:
        raise ValueError(f"{SLOWDOWN_ENV}={text!r}: expected a positive number")
    return factor


class NullSession(Session):
    def __init__(self, params: NullParams) -> None:
        self.params = params
        self.factor = slowdown_factor()

    def runner(self, x: Inputs) -> Callable[[], Any]:
        p = self.params
        base_s = p.sleep_ms * self.factor / 1000.0
        jitter_s = p.jitter_ms * self.factor / 1000.0
        rng = np.random.default_rng(p.seed)
        if p.wait == "sleep":
            sleep = time.sleep
            if jitter_s == 0:
                return lambda: sleep(base_s)
            return lambda: sleep(base_s + jitter_s * rng.random())

        clock = time.perf_counter

        def spin() -> None:
            end = clock() + base_s + (jitter_s * rng.random() if jitter_s else 0.0)
            while clock() < end:
                pass

        return spin

    def predict(self, x: Inputs) -> None:
        """No outputs: accuracy and fidelity columns stay empty (the measure stage says why)."""
        return None

    def inspect(self) -> dict[str, Any]:
        p = self.params
        notes = [
            f"null backend: each call {'sleeps' if p.wait == 'sleep' else 'spins'} "
            f"{p.sleep_ms:g} ms (+ up to {p.jitter_ms:g} ms jitter); no model is run"
        ]
        if self.factor != 1.0:
            notes.append(f"slowdown x{self.factor:g} injected by {SLOWDOWN_ENV}")
        return {"notes": notes}


@backends.register
class NullBackend(Backend):
    name = "null"
    description = "a configured wait per call, no computation (calibrates regression detection)"
    Params = NullParams
    loads = ("onnx", "torch", "tflite")
    requires = ()

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"qbench {version('qbench')}"
        except PackageNotFoundError:
            return "qbench"

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, NullParams)
        return NullSession(params)
