"""A meter read from a command the user gives: it prints watts (or, with `joules: true`, a
cumulative energy counter in joules) as the first number on its last line of output.

    power: {meter: {name: command, params: {command: "ipmitool-watts.sh"}}}

The command runs without a shell, once per sample (cadence 1 s by default: every read starts a
process), with a timeout. A counter printed in joules must not decrease between reads.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from pydantic import Field

from qbench.params import Params
from qbench.plugins import power_meters
from qbench.power.base import MeterError, PowerMeter, Probe, Reading

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class CommandParams(Params):
    command: str | list[str] = Field(
        description="the command, as a list of arguments or one string split like a shell's"
    )
    joules: bool = Field(
        default=False, description="it prints a cumulative energy counter in joules, not watts"
    )
    timeout_s: float = Field(default=5.0, gt=0, description="seconds one read may take")


def argv_of(params: CommandParams) -> list[str]:
    return shlex.split(params.command) if isinstance(params.command, str) else list(params.command)


def parse_number(text: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    match = _NUMBER.search(lines[-1]) if lines else None
    if match is None:
        shown = text.strip()[-60:]
        raise MeterError(f"the command printed {shown!r}, expected a number")
    return float(match.group())


class CommandProbe(Probe):
    def __init__(self, params: CommandParams) -> None:
        self.params = params
        self.argv = argv_of(params)
        self.sensor = f"command {shlex.join(self.argv)} ({'J' if params.joules else 'W'})"
        self._first: float | None = None
        self._last: float | None = None

    def read(self) -> Reading:
        start = time.monotonic()
        try:
            proc = subprocess.run(
                self.argv,
                capture_output=True,
                text=True,
                timeout=self.params.timeout_s,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MeterError(f"the command took over {self.params.timeout_s:g} s") from exc
        except OSError as exc:
            raise MeterError(f"the command could not start ({exc})") from exc
        t = (start + time.monotonic()) / 2
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            raise MeterError(f"the command exited with code {proc.returncode}: {tail}")
        value = parse_number(proc.stdout)
        if not self.params.joules:
            return Reading(t=t, watts=value)
        if self._last is not None and value < self._last:
            raise MeterError(f"the joule counter went down ({self._last:g} -> {value:g})")
        if self._first is None:
            self._first = value
        self._last = value
        return Reading(t=t, joules=value - self._first)


@power_meters.register
class CommandMeter(PowerMeter):
    name = "command"
    description = "a command the user gives, printing watts (or joules), sampled"
    Params = CommandParams
    default_cadence_s = 1.0  # each read starts a process

    def unavailable(self, params: Params | None = None) -> str | None:
        if not isinstance(params, CommandParams):
            return "no sensor: the command meter needs a command parameter"
        argv = argv_of(params)
        if not argv:
            return "no sensor: the command is empty"
        exe = argv[0]
        found = shutil.which(exe) if "/" not in exe else (exe if Path(exe).is_file() else None)
        if found is None:
            return f"no sensor: command {exe!r} not found"
        return None

    def open(self, params: Params) -> CommandProbe:
        assert isinstance(params, CommandParams)
        return CommandProbe(params)
