"""A backend that misbehaves on purpose, for testing that one bad cell never stops a run.

Loaded in every process of a run through QBENCH_PLUGINS=tests.plugins.faulty.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from qbench.backends.base import Backend, Session
from qbench.params import Params
from qbench.plugins import backends


class FaultyParams(Params):
    mode: Literal["crash", "hang", "raise"] = Field(description="how to fail when opening")


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
            os.abort()
        if params.mode == "hang":
            time.sleep(3600)
        raise RuntimeError("faulty backend raised on purpose")


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
