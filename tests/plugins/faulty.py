"""A backend that misbehaves on purpose, for testing that one bad cell never stops a run.

Loaded in every process of a run through QBENCH_PLUGINS=tests.plugins.faulty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from qbench.backends.base import Backend, Session
from qbench.params import Params
from qbench.plugins import backends

# Folder where the `block` mode writes the pids of its stage and of a grandchild it starts.
PIDS_ENV = "QBENCH_TEST_PIDS"


class FaultyParams(Params):
    mode: Literal["crash", "hang", "raise", "block", "bad_row", "rt_signal"] = Field(
        description="crash (SIGABRT), hang, raise; block: write the stage's pid and a "
        "grandchild's to $QBENCH_TEST_PIDS, then wait; bad_row: measure normally (as the null "
        "backend) but report a text where an integer column is; rt_signal: die by a real-time "
        "signal"
    )


@backends.register
class FaultyBackend(Backend):
    name = "faulty"
    description = "test backend: crashes (SIGABRT), hangs or raises when it opens an artifact"
    Params = FaultyParams
    loads = ("onnx",)
    requires = ()

    def version(self) -> str:
        return "0"

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, FaultyParams)
        if params.mode == "crash":
            # what a native crash leaves: a line on stderr, no Python traceback
            os.write(2, b"faulty: native code gave up\n")
            os.abort()
        if params.mode == "hang":
            time.sleep(3600)
        if params.mode == "block" and PIDS_ENV in os.environ:
            folder = Path(os.environ[PIDS_ENV])
            child = subprocess.Popen(["sleep", "3600"])  # a grandchild of qbench: must die too
            (folder / "grandchild.pid").write_text(str(child.pid))
            (folder / "stage.pid").write_text(str(os.getpid()))
            time.sleep(3600)
        if params.mode == "rt_signal":
            os.kill(os.getpid(), signal.SIGRTMIN + 3)
        if params.mode == "block":  # nothing to block for (a resumed run): measure as null
            from qbench.backends.null import NullBackend, NullParams

            return NullBackend().open(artifact, fmt, threads, NullParams())
        if params.mode == "bad_row":
            from qbench.backends.null import NullBackend, NullParams

            return _BadRowSession(NullBackend().open(artifact, fmt, threads, NullParams()))
        raise RuntimeError("faulty backend raised on purpose")


class _BadRowSession(Session):
    """Measures as the null backend does, but reports a value of the wrong type."""

    def __init__(self, inner: Session) -> None:
        self.inner = inner

    def runner(self, x: Any) -> Any:
        return self.inner.runner(x)

    def predict(self, x: Any) -> Any:
        return self.inner.predict(x)

    def inspect(self) -> dict[str, Any]:
        return {"quantized_nodes": "many"}


@backends.register
class NeedsMissingPackage(Backend):
    name = "needs_missing"
    description = "test backend that needs a package no machine has"
    loads = ("onnx",)
    requires = ("qbench_no_such_package_xyz",)


from qbench.methods.base import Method  # noqa: E402
from qbench.plugins import methods  # noqa: E402


@methods.register
class TfliteOnly(Method):
    name = "tflite_only"
    description = "test method whose artifacts no test backend loads"
    produces = ("tflite",)
