"""What else ran on the machine while a cell was timed.

On a shared machine (a CI runner, a 2-core VM) two cells timed minutes apart can see different
loads: an fp32 cell timed while a build ran next to it looks slow, and every speed-up over it
looks large. Each timed window records how many CPUs' worth of time other processes (and the
hypervisor, as steal) took during it, so that a ratio of two cells timed under different loads
can be flagged instead of trusted.

other load = (busy CPU time of the whole machine − this process's own CPU time) / wall time,
from /proc/stat (user, nice, system, irq, softirq and steal jiffies of every CPU) and the
process's own user + system time (every thread of it; its children too). Where /proc/stat
cannot be read (not Linux) the columns stay empty.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# /proc/stat's first line: cpu user nice system idle iowait irq softirq steal guest guest_nice
# (guest time is already counted in user). Indices into the numbers after "cpu".
_BUSY = (0, 1, 2, 5, 6, 7)
_STEAL = 7


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    busy_s: float  # CPU time every process (and the hypervisor's steal) took, all CPUs
    steal_s: float
    own_s: float  # this process's (and its waited-for children's) user + system time


def snapshot() -> CpuSnapshot | None:
    try:
        first = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    ticks = [int(v) for v in first[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return CpuSnapshot(
        wall_s=time.monotonic(),
        busy_s=sum(ticks[i] for i in _BUSY if i < len(ticks)) / hz,
        steal_s=(ticks[_STEAL] if len(ticks) > _STEAL else 0) / hz,
        own_s=own.user + own.system + own.children_user + own.children_system,
    )


def load_columns(before: CpuSnapshot | None, after: CpuSnapshot | None) -> dict[str, float]:
    """The row's load columns for the window between two snapshots (empty without them)."""
    if before is None or after is None:
        return {}
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return {}
    other = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    # /proc/stat counts in jiffies (10 ms): a short window can come out a hair below zero
    return {
        "load_other_cores": round(max(0.0, other / wall), 3),
        "load_steal_cores": round(max(0.0, (after.steal_s - before.steal_s) / wall), 3),
    }


class LoadWindow:
    """`with LoadWindow() as load: ...` then `load.columns()`: the other load during the block."""

    def __init__(self) -> None:
        self.before: CpuSnapshot | None = None
        self.after: CpuSnapshot | None = None

    def __enter__(self) -> LoadWindow:
        self.before = snapshot()
        return self

    def __exit__(self, *_: object) -> None:
        self.after = snapshot()

    def columns(self) -> dict[str, float]:
        return load_columns(self.before, self.after)
