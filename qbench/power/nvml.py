"""NVIDIA GPUs through NVML (the `pynvml` module of the nvidia-ml-py package).

Where the GPU has one (Volta and later), the total energy counter
(nvmlDeviceGetTotalEnergyConsumption, millijoules since the driver loaded, 64-bit: no wrap) gives
the window's energy exactly. Otherwise the board power (nvmlDeviceGetPowerUsage, milliwatts) is
sampled and integrated. Without pynvml, without the driver or without a GPU the meter is
unavailable and says which of these is missing.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from typing import Any

from pydantic import Field

from qbench.params import Params
from qbench.plugins import power_meters
from qbench.power.base import MeterError, PowerMeter, Probe, Reading


class NvmlParams(Params):
    index: int = Field(default=0, ge=0, description="GPU index as NVML counts them")


def _pynvml() -> Any:
    return importlib.import_module("pynvml")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _query(nvml: Any, handle: Any) -> str | None:
    """'energy' when the GPU has the total energy counter, 'power' when it reports power only."""
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return "energy"
    except nvml.NVMLError:
        pass
    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
        return "power"
    except nvml.NVMLError:
        return None


class NvmlProbe(Probe):
    def __init__(self, nvml: Any, index: int) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        try:
            self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
            self.kind = _query(nvml, self.handle)
            if self.kind is None:
                raise MeterError("the GPU reports neither total energy nor power usage")
            name = _text(nvml.nvmlDeviceGetName(self.handle))
        except BaseException:
            nvml.nvmlShutdown()
            raise
        what = "total energy counter" if self.kind == "energy" else "power usage"
        self.sensor = f"GPU {index} {name} ({what})"
        self._first_mj: int | None = None
        self._lock = threading.Lock()

    def read(self) -> Reading:
        nvml = self.nvml
        with self._lock:
            try:
                if self.kind == "energy":
                    mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
                    t = time.monotonic()
                    if self._first_mj is None:
                        self._first_mj = mj
                    return Reading(t=t, joules=(mj - self._first_mj) / 1000.0)
                mw = nvml.nvmlDeviceGetPowerUsage(self.handle)
                return Reading(t=time.monotonic(), watts=mw / 1000.0)
            except nvml.NVMLError as exc:
                raise MeterError(f"NVML read failed: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


@power_meters.register
class NvmlMeter(PowerMeter):
    name = "nvml"
    description = "NVIDIA GPU energy counter (or sampled board power) through NVML (pynvml)"
    Params = NvmlParams
    default_cadence_s = 0.1  # power-only GPUs are integrated from samples; counters are exact
    local_sensor = True

    def unavailable(self, params: Params | None = None) -> str | None:
        p = params if isinstance(params, NvmlParams) else NvmlParams()
        try:
            nvml = _pynvml()
        except ImportError:
            return "no sensor: pynvml (package nvidia-ml-py) is not installed"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return f"no sensor: NVML cannot start ({exc}: no NVIDIA driver)"
        try:
            count = nvml.nvmlDeviceGetCount()
            if count == 0:
                return "no sensor: NVML sees no GPU"
            if p.index >= count:
                return f"no sensor: no GPU {p.index} (NVML sees {count})"
            handle = nvml.nvmlDeviceGetHandleByIndex(p.index)
            if _query(nvml, handle) is None:
                name = _text(nvml.nvmlDeviceGetName(handle))
                return f"no sensor: GPU {p.index} {name} reports neither energy nor power"
            return None
        except nvml.NVMLError as exc:
            return f"no sensor: NVML query failed ({exc})"
        finally:
            nvml.nvmlShutdown()

    def open(self, params: Params) -> NvmlProbe:
        assert isinstance(params, NvmlParams)
        try:
            nvml = _pynvml()
        except ImportError as exc:
            raise MeterError("pynvml (package nvidia-ml-py) is not installed") from exc
        try:
            return NvmlProbe(nvml, params.index)
        except nvml.NVMLError as exc:
            raise MeterError(f"NVML: {exc}") from exc
