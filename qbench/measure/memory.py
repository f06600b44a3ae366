"""Peak memory of this process.

VmHWM from /proc/self/status, not getrusage's ru_maxrss: in a forked child ru_maxrss reports
the parent's peak (shared/facts.md). Cells run in a fresh process, so VmHWM is the cell's own.
"""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    return None
