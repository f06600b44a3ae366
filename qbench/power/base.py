"""Power meters: what a meter is, how one is read, and the sampler that reads it in the background.

A meter plugin (`PowerMeter`) says cheaply why it cannot measure here (`unavailable`), and opens
a `Probe` whose `read()` returns one `Reading`: instantaneous watts, a cumulative energy counter
in joules, or both. Energy over a window comes from the counter where the sensor has one (RAPL,
NVML total energy: exact, whatever the cadence) and otherwise from the trapezoidal integral of
the power samples.

`Sampler` reads a probe on a background thread at a stated cadence: one read when it starts,
one every `cadence_s` (the thread sleeps in `Event.wait` between reads; no busy loop), one when
it stops. The measured loop is not touched; the sampler's cost is one short read per cadence,
which is why cadences are coarse (0.1 s and up).

    with meter.window(params, cadence_s=1.0) as w:
        work()
    w.result.joules, w.result.avg_watts, w.result.samples, w.result.seconds
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from qbench.params import NoParams, Params


class MeterError(RuntimeError):
    """A meter could not be read (the sensor vanished, answered garbage, timed out)."""


@dataclass(frozen=True)
class Reading:
    """One read of a sensor. `t` is time.monotonic() seconds at the read (its midpoint for
    reads that take time, such as an HTTP request)."""

    t: float
    watts: float | None = None
    joules: float | None = None  # cumulative energy since the probe opened, wrap-arounds undone


@dataclass(frozen=True)
class Window:
    """Energy over one window, from the readings of one sampler."""

    meter: str
    sensor: str
    seconds: float  # first read to last read
    joules: float
    samples: int
    cadence_s: float
    method: str  # "counter": difference of an energy counter; "integrated": ∫ power dt

    @property
    def avg_watts(self) -> float | None:
        return self.joules / self.seconds if self.seconds > 0 else None


class Probe:
    """An opened meter. `read` is called from one thread at a time (the sampler serialises)."""

    sensor: str = ""  # what exactly is read, in words ("package-0 (/sys/class/powercap/...)")

    def read(self) -> Reading:
        raise NotImplementedError

    def close(self) -> None:
        """Release the sensor (NVML handle, HTTP session); the default has nothing to release."""


def energy_of(readings: Sequence[Reading]) -> tuple[float, str]:
    """Joules between the first and the last reading, and how they were obtained."""
    if len(readings) < 2:
        return 0.0, "counter"
    if all(r.joules is not None for r in readings):
        return float(readings[-1].joules - readings[0].joules), "counter"  # type: ignore[operator]
    if any(r.watts is None for r in readings):
        raise MeterError("the meter returned neither an energy counter nor power on every read")
    joules = 0.0
    for a, b in itertools.pairwise(readings):
        joules += 0.5 * (a.watts + b.watts) * (b.t - a.t)  # type: ignore[operator]
    return joules, "integrated"


class Sampler:
    """Reads a probe now, every `cadence_s` on a background thread, and once more at stop()."""

    def __init__(self, probe: Probe, cadence_s: float) -> None:
        if cadence_s <= 0:
            raise ValueError("cadence_s must be positive")
        self.probe = probe
        self.cadence_s = cadence_s
        self.readings: list[Reading] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        with self._lock:
            self.readings.append(self.probe.read())

    def start(self) -> None:
        self._read()  # the window opens at this read; a failure here raises to the caller
        self._t0 = self.readings[0].t
        self._thread = threading.Thread(target=self._run, name="qbench-power-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        slot = 1
        while True:
            due = self._t0 + slot * self.cadence_s
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                self._read()
            except Exception as exc:  # reported by stop(); the measurement itself goes on
                self.error = exc
                return
            # After a slow read, skip the slots already missed rather than read back to back.
            slot = max(slot + 1, int((time.monotonic() - self._t0) / self.cadence_s) + 1)

    def stop(self) -> list[Reading]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is None:
            try:
                self._read()  # the window closes at this read
            except Exception as exc:
                self.error = exc
        return list(self.readings)


@dataclass
class WindowHandle:
    """What `PowerMeter.window` yields; `result` is set when the block ends."""

    result: Window | None = None


@contextmanager
def sampled_window(probe: Probe, meter_name: str, cadence_s: float) -> Iterator[WindowHandle]:
    """Sample `probe` while the block runs; the handle's `result` holds the window's energy.

    A failed read raises MeterError when the block ends (not inside it: the measured work is
    never interrupted by its meter)."""
    sampler = Sampler(probe, cadence_s)
    handle = WindowHandle()
    sampler.start()
    try:
        yield handle
    finally:
        readings = sampler.stop()
    if sampler.error is not None:
        raise MeterError(f"{meter_name}: {sampler.error}") from sampler.error
    handle.result = window_of(readings, meter_name, probe.sensor, cadence_s)


def window_of(readings: Sequence[Reading], meter: str, sensor: str, cadence_s: float) -> Window:
    joules, method = energy_of(readings)
    return Window(
        meter=meter,
        sensor=sensor,
        seconds=readings[-1].t - readings[0].t if readings else 0.0,
        joules=joules,
        samples=len(readings),
        cadence_s=cadence_s,
        method=method,
    )


class PowerMeter:
    """A power meter plugin. Subclasses set name, description, Params, default_cadence_s and
    implement `unavailable` and `open`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    default_cadence_s: ClassVar[float] = 1.0
    # Meters that read a sensor of the machine the cell runs on (rapl, nvml) can be picked
    # automatically for a device that names no meter; external ones (http, command) cannot.
    local_sensor: ClassVar[bool] = False

    def unavailable(self, params: Params | None = None) -> str | None:
        """Why this meter cannot measure here ("no sensor: /sys/class/powercap absent"), or
        None. Cheap: called once per cell before measuring."""
        raise NotImplementedError

    def available(self, params: Params | None = None) -> bool:
        return self.unavailable(params) is None

    def open(self, params: Params) -> Probe:
        raise NotImplementedError

    @contextmanager
    def window(self, params: Params, cadence_s: float | None = None) -> Iterator[WindowHandle]:
        """Open the meter, sample it while the block runs, close it. See `sampled_window`."""
        probe = self.open(params)
        try:
            with sampled_window(probe, self.name, cadence_s or self.default_cadence_s) as handle:
                yield handle
        finally:
            probe.close()
