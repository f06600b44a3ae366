"""Linux RAPL through the powercap sysfs tree: CPU package energy counters.

    /sys/class/powercap/intel-rapl:0/name                 "package-0"
    /sys/class/powercap/intel-rapl:0/energy_uj            cumulative energy, µJ
    /sys/class/powercap/intel-rapl:0/max_energy_range_uj  where energy_uj wraps to 0
    /sys/class/powercap/intel-rapl:0:0/...                sub-zones (core, uncore, dram)

The kernel's intel_rapl driver serves AMD Zen packages under the same names. A counter wraps at
max_energy_range_uj (about 4.3 kJ for a 32-bit range: a minute at 70 W, so a wrap-around within
one benchmark window is ordinary); the probe keeps the last raw value of each zone and adds the
range whenever a read comes out lower than the one before. That is exact as long as at most one
wrap happens between two reads, which the sampler's cadence (1 s by default) guarantees for any
real package. Since the fix for CVE-2020-8694 (Linux 5.10), energy_uj is readable by root only.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from pydantic import Field

from qbench.params import Params
from qbench.plugins import power_meters
from qbench.power.base import MeterError, PowerMeter, Probe, Reading

_TOP_ZONE = re.compile(r"^intel-rapl:\d+$")


class RaplParams(Params):
    root: str = Field(default="/sys/class/powercap", description="powercap sysfs root")
    zones: list[str] = Field(
        default=[],
        description="zone names to sum (e.g. [package-0, dram]); default: every package-* zone",
    )


def _zone_dirs(root: Path) -> list[Path]:
    """Every RAPL zone directory (top-level and sub-zones), sorted."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("intel-rapl:"))


def _zone_name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip()
    except OSError:
        return zone.name


def select_zones(root: Path, wanted: list[str]) -> list[tuple[str, Path]]:
    """(name, directory) of the zones to sum: the named ones, or every top-level package-*."""
    zones = [(_zone_name(z), z) for z in _zone_dirs(root)]
    if wanted:
        return [(n, z) for n, z in zones if n in wanted]
    # Sub-zones (core, uncore) are parts of their package: summing them would count twice.
    return [(n, z) for n, z in zones if _TOP_ZONE.match(z.name) and n.startswith("package")]


class RaplProbe(Probe):
    def __init__(self, zones: list[tuple[str, Path]]) -> None:
        self.zones = zones
        self.sensor = ", ".join(f"{n} ({z})" for n, z in zones)
        self._range = [int((z / "max_energy_range_uj").read_text()) for _, z in zones]
        self._last: list[int] | None = None
        self._total_uj = 0
        self._lock = threading.Lock()

    def _raw(self) -> list[int]:
        try:
            return [int((z / "energy_uj").read_text()) for _, z in self.zones]
        except (OSError, ValueError) as exc:
            raise MeterError(f"reading RAPL energy_uj failed: {exc}") from exc

    def read(self) -> Reading:
        with self._lock:
            raw = self._raw()
            t = time.monotonic()
            if self._last is not None:
                for i, (now, before) in enumerate(zip(raw, self._last, strict=True)):
                    delta = now - before
                    if delta < 0:  # wrapped past max_energy_range_uj since the last read
                        delta += self._range[i]
                    self._total_uj += delta
            self._last = raw
            return Reading(t=t, joules=self._total_uj / 1e6)


@power_meters.register
class RaplMeter(PowerMeter):
    name = "rapl"
    description = "Linux RAPL package energy counters (powercap sysfs), wrap-around handled"
    Params = RaplParams
    default_cadence_s = 1.0  # counters are exact whatever the cadence; reads only catch wraps
    local_sensor = True

    def unavailable(self, params: Params | None = None) -> str | None:
        p = params if isinstance(params, RaplParams) else RaplParams()
        root = Path(p.root)
        if not root.is_dir():
            return f"no sensor: {root} absent"
        if not _zone_dirs(root):
            return f"no sensor: no intel-rapl zones under {root}"
        zones = select_zones(root, p.zones)
        if not zones:
            known = ", ".join(sorted({_zone_name(z) for z in _zone_dirs(root)}))
            wanted = ", ".join(p.zones) if p.zones else "package-*"
            return f"no sensor: no RAPL zone {wanted} under {root} (zones: {known})"
        for _, zone in zones:
            for leaf in ("energy_uj", "max_energy_range_uj"):
                try:
                    int((zone / leaf).read_text())
                except PermissionError:
                    return (
                        f"no sensor: {zone / leaf} is not readable by this user "
                        "(root only since Linux 5.10, CVE-2020-8694)"
                    )
                except (OSError, ValueError) as exc:
                    return f"no sensor: cannot read {zone / leaf} ({exc})"
        return None

    def open(self, params: Params) -> RaplProbe:
        assert isinstance(params, RaplParams)
        why = self.unavailable(params)
        if why:
            raise MeterError(why)
        return RaplProbe(select_zones(Path(params.root), params.zones))
