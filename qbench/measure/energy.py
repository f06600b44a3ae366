"""Energy per inference: a power meter around the timed window, or (only when the suite asks) an
estimate from the datasheet TDP.

At plan time `plan_power` turns the suite's `power` section and the device into a plain dict
that the Cell carries (meter name and typed parameters, mode, cadence, idle seconds, TDP); a
wrong meter name or parameter is a one-line suite error there. In the measure stage
`EnergyRecorder` does, around the untouched timing loop:

    recorder = EnergyRecorder(cell.power, cell.device, cell.device_kind)
    recorder.idle()                 # idle baseline: the meter sampled while the process sleeps
    ... warm-up ...
    with recorder.window():         # the timed rounds only
        rounds = time_rounds(...)
    row.update(recorder.columns(inferences))

Energy per inference = (energy over the window − idle power × window) / inferences.

Every figure carries its provenance (power_provenance): "measured" (a sensor), "estimated"
(TDP × the process's CPU utilisation: CPU seconds / wall seconds / logical cores, only with
`power: estimate`), or empty with the reason in power_note ("no sensor: /sys/class/powercap
absent"). A measured and an estimated figure are not comparable (`comparison_refusal`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from qbench.devices import Device
    from qbench.plugins import Families
    from qbench.power.base import Probe, Window
    from qbench.suite.loader import SuiteSource
    from qbench.suite.schema import Power

POWER_COLUMNS = (
    "power_source",
    "power_provenance",
    "power_cadence_s",
    "power_window_s",
    "power_samples",
    "idle_power_w",
    "active_power_w",
    "energy_per_inference_mj",
    "power_note",
)
MEASURED, ESTIMATED = "measured", "estimated"
TDP_SOURCE = "tdp_estimate"

# Sensors of the device itself, tried in order when the device names no meter. External meters
# (http, command) need parameters and are never guessed.
AUTO_METERS: dict[str, tuple[str, ...]] = {"cpu": ("rapl",), "gpu": ("nvml",)}

DEFAULT_SPEC: dict[str, Any] = {
    "mode": "measure",
    "meter": None,
    "params": {},
    "meter_from": None,
    "cadence_s": None,
    "idle_s": 1.0,
    "tdp_w": None,
    "tdp_from": None,
}


def datasheet_tdp(datasheet: Any) -> tuple[float | None, str | None]:
    """(watts, key) from a device datasheet (typed or a plain mapping): tdp_w, else power_w."""
    get = getattr(datasheet, "get", None)
    if get is None:
        return None, None
    for key in ("tdp_w", "power_w"):
        value = get(key)
        try:
            watts = float(value)
        except (TypeError, ValueError):
            continue
        if watts > 0:
            return watts, key
    return None, None


def _device_meter(device: Any) -> tuple[str | None, dict[str, Any]]:
    """The device's power_meter: a name, or (if a later schema makes it one) {name, params}."""
    value = getattr(device, "power_meter", None)
    if value is None:
        return None, {}
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict):
        return value.get("name"), dict(value.get("params") or {})
    return getattr(value, "name", None), dict(getattr(value, "params", {}) or {})


def plan_power(
    section: Power, device: Device, d_index: int, fam: Families, source: SuiteSource
) -> dict[str, Any]:
    """The Cell's `power` dict for one device, with the meter name and parameters checked."""
    from qbench.registry import RegistryError
    from qbench.suite.loader import first_error

    spec = {
        **DEFAULT_SPEC,
        "mode": section.mode,
        "cadence_s": section.cadence_s,
        "idle_s": section.idle_s,
    }
    if section.mode == "off":
        return spec
    if section.meter is not None:
        name, params, origin = section.meter.name, dict(section.meter.params), "suite"
    else:
        name, params = _device_meter(device)
        origin = "device" if name else None
    if name:
        where = ["power", "meter"] if origin == "suite" else ["devices", d_index]
        prefix = f"device {device.name}: " if origin == "device" else ""
        try:
            meter = fam.power_meters.get(name)
        except RegistryError as exc:
            if origin == "suite":
                raise source.error(where, str(exc)) from None
            # A device file may name a meter from a plugin package not installed here: its
            # cells still run, with the power columns empty and this reason.
            spec.update(meter=name, params=params, meter_from=origin, unknown=str(exc))
            return _with_tdp(spec, section, device)
        try:
            typed = meter.Params(**params)
        except ValidationError as exc:
            if origin == "suite":
                raise first_error(source, exc, prefix=[*where, "params"]) from None
            msg = exc.errors()[0]["msg"]
            raise source.error(where, f"{prefix}power meter {name}: {msg}") from None
        spec.update(meter=name, params=typed.model_dump(), meter_from=origin)
    return _with_tdp(spec, section, device)


def _with_tdp(spec: dict[str, Any], section: Power, device: Device) -> dict[str, Any]:
    if section.tdp_w is not None:
        spec.update(tdp_w=section.tdp_w, tdp_from="suite power.tdp_w")
    else:
        watts, key = datasheet_tdp(getattr(device, "datasheet", None))
        if watts is not None:
            spec.update(tdp_w=watts, tdp_from=f"device {device.name} datasheet {key}")
    return spec


def comparison_refusal(a: str | None, b: str | None) -> str | None:
    """Why two energy figures with these provenances must not be compared, or None."""
    if a is None or b is None:
        return "no energy figure to compare (see power_note)"
    if a != b:
        return f"refused: {a} and {b} energy figures are not comparable"
    return None


def energy_label(value: float | None, provenance: str | None, note: str | None = None) -> str:
    """'0.421 mJ (measured)', '0.421 mJ (estimated)', or '— (no sensor: ...)' for tables."""
    if value is None or provenance is None:
        return f"— ({note})" if note else "—"
    return f"{value:.3g} mJ ({provenance})"


class EnergyRecorder:
    """Measures (or estimates) the power columns of one cell in the measure stage."""

    def __init__(self, spec: dict[str, Any] | None, device: str, device_kind: str) -> None:
        self.spec = {**DEFAULT_SPEC, **(spec or {})}
        self.device = device
        self.device_kind = device_kind
        self.reason: str | None = None  # why the columns stay empty
        self.meter_name: str | None = None
        self._meter: Any = None
        self._params: Any = None
        self._probe: Probe | None = None
        self._idle: Window | None = None
        self._active: Window | None = None
        self._estimate: tuple[float, float] | None = None  # (cpu seconds, wall seconds)
        mode = self.spec["mode"]
        if mode == "off":
            self.reason = "power: off in the suite"
        elif mode == "estimate":
            if device_kind != "cpu":
                # CPU time says nothing of how busy an accelerator is (a blocking Edge TPU call
                # costs the host almost no CPU): an estimate would be invented, so none is made.
                self.reason = (
                    f"no estimate: TDP x CPU utilisation describes a cpu, device {device} is a "
                    f"{device_kind}"
                )
            elif self.spec["tdp_w"] is None:
                self.reason = (
                    f"no estimate: device {device} has no datasheet tdp_w and the suite sets "
                    "no power.tdp_w"
                )
        else:
            self._pick_meter()

    # ---- which meter ------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[str, dict[str, Any]]]:
        if self.spec["meter"]:
            return [(self.spec["meter"], self.spec["params"])]
        return [(name, {}) for name in AUTO_METERS.get(self.device_kind, ())]

    def _find_meter(self) -> tuple[str | None, Any, Any, str]:
        """(name, meter, typed params, reasons) of the first available candidate."""
        from qbench.plugins import load_builtin
        from qbench.registry import RegistryError

        # the power folder only: this runs inside the measure stage, whose process must hold
        # the cell's own runtime and nothing else (a meter from a plugin loads everything)
        fam = load_builtin("power", "power_meters", tuple(n for n, _ in self._candidates()))
        reasons = []
        for name, params in self._candidates():
            try:
                meter = fam.power_meters.get(name)()
            except RegistryError as exc:
                reasons.append(f"no sensor: {exc}")
                continue
            try:
                typed = meter.Params(**params)
                why = meter.unavailable(typed)
            except Exception as exc:  # a plugin that fails to say is a plugin that can't measure
                why = f"{name}: {type(exc).__name__}: {exc}"
            if why is None:
                return name, meter, typed, ""
            reasons.append(why)
        if not self._candidates():
            reasons.append(
                f"no sensor: device {self.device} names no power_meter and qbench reads no "
                f"built-in sensor of a {self.device_kind}"
            )
        elif not self.spec["meter"]:
            reasons[-1] += f" (device {self.device} names no power_meter)"
        return None, None, None, "; ".join(reasons)

    def _pick_meter(self) -> None:
        name, meter, typed, reasons = self._find_meter()
        self.meter_name = self.spec["meter"] or name
        if meter is None:
            self.reason = reasons
            return
        self._meter, self._params = meter, typed
        try:
            self._probe = meter.open(typed)
        except Exception as exc:
            self._fail("opening the meter", exc)

    @property
    def cadence_s(self) -> float:
        return float(self.spec["cadence_s"] or getattr(self._meter, "default_cadence_s", 1.0))

    def _fail(self, when: str, exc: BaseException) -> None:
        self.reason = f"{self.meter_name} failed {when}: {exc}"
        self.close()

    # ---- the two windows --------------------------------------------------------------------

    def idle(self) -> None:
        """Idle baseline: sample the meter for idle_s seconds while this process sleeps."""
        idle_s = float(self.spec["idle_s"] or 0.0)
        if self._probe is None or idle_s <= 0:
            return
        with self._sampling("during the idle baseline") as result:
            time.sleep(idle_s)
        self._idle = result[0] if result else None

    @contextmanager
    def window(self) -> Iterator[None]:
        """The timed window: sampled by the meter, or timed for the estimate."""
        if self._probe is not None:
            with self._sampling("during the timed window") as result:
                yield
            self._active = result[0] if result else None
        elif self.spec["mode"] == "estimate" and self.reason is None:
            cpu0, wall0 = time.process_time(), time.monotonic()
            yield
            self._estimate = (time.process_time() - cpu0, time.monotonic() - wall0)
        else:
            yield

    @contextmanager
    def _sampling(self, when: str) -> Iterator[list[Window]]:
        """Sample the open probe while the block runs; yields a list that receives the Window
        (empty if the meter failed, with the reason recorded). The block is never interrupted
        by its meter, and its own exceptions pass through."""
        from qbench.power.base import Sampler, window_of

        assert self._probe is not None
        out: list[Window] = []
        sampler = Sampler(self._probe, self.cadence_s)
        try:
            sampler.start()
        except Exception as exc:
            self._fail(when, exc)
            yield out
            return
        try:
            yield out
        finally:
            readings = sampler.stop()
        if sampler.error is not None:
            self._fail(when, sampler.error)
            return
        try:
            out.append(window_of(readings, self.meter_name or "", self._probe.sensor,
                                 self.cadence_s))  # fmt: skip
        except Exception as exc:
            self._fail(when, exc)

    def close(self) -> None:
        if self._probe is not None:
            try:
                self._probe.close()
            finally:
                self._probe = None

    # ---- the row ----------------------------------------------------------------------------

    def columns(self, inferences: int) -> dict[str, Any]:
        """The power columns of the row (all keys present; empty ones None, with power_note)."""
        cols: dict[str, Any] = dict.fromkeys(POWER_COLUMNS)
        if self._active is not None and self.reason is None:
            cols.update(self._measured(inferences))
        elif self._estimate is not None and self.reason is None:
            cols.update(self._estimated(inferences))
        else:
            cols["power_source"] = self.meter_name
            cols["power_note"] = self.reason or "no power figure: the window was not measured"
        return cols

    def _measured(self, inferences: int) -> dict[str, Any]:
        w = self._active
        assert w is not None
        active = w.avg_watts
        idle = self._idle.avg_watts if self._idle is not None else None
        parts = [
            f"measured: {w.meter} {w.sensor}",
            f"{'energy counter' if w.method == 'counter' else 'power integrated'} over "
            f"{w.seconds:.2f} s, {w.samples} reads at {w.cadence_s:g} s",
        ]
        energy_j = w.joules
        if idle is not None and self._idle is not None:
            energy_j -= idle * w.seconds
            parts.append(f"idle baseline {idle:.2f} W over {self._idle.seconds:.2f} s")
        else:
            parts.append("no idle baseline (power.idle_s: 0): idle power included")
        per_inference: float | None = energy_j / inferences * 1000.0 if inferences > 0 else None
        if per_inference is not None and per_inference <= 0:
            parts.append(
                f"active power {active or 0:.2f} W not above the idle baseline: "
                "energy per inference not resolved"
            )
            per_inference = None
        return {
            "power_source": w.meter,
            "power_provenance": MEASURED,
            "power_cadence_s": w.cadence_s,
            "power_window_s": w.seconds,
            "power_samples": w.samples,
            "idle_power_w": idle,
            "active_power_w": active,
            "energy_per_inference_mj": per_inference,
            "power_note": "; ".join(parts),
        }

    def _estimated(self, inferences: int) -> dict[str, Any]:
        assert self._estimate is not None
        cpu_s, wall_s = self._estimate
        cores = os.cpu_count() or 1
        tdp = float(self.spec["tdp_w"])
        utilisation = min(1.0, cpu_s / wall_s / cores) if wall_s > 0 else 0.0
        active = tdp * utilisation
        name, _, _, _ = self._find_meter()
        why = (
            "no sensor" if name is None else f"sensor {name} not used: the suite asks for estimates"
        )
        note = (
            f"estimated: TDP {tdp:g} W × utilisation {utilisation:.2f} ({why}); utilisation = "
            f"process CPU {cpu_s:.2f} s / wall {wall_s:.2f} s / {cores} logical cores; "
            f"TDP from {self.spec['tdp_from']}; no idle baseline"
        )
        return {
            "power_source": TDP_SOURCE,
            "power_provenance": ESTIMATED,
            "power_cadence_s": None,
            "power_window_s": wall_s,
            "power_samples": None,
            "idle_power_w": None,
            "active_power_w": active,
            "energy_per_inference_mj": active * wall_s / inferences * 1000.0
            if inferences > 0
            else None,
            "power_note": note,
        }

    def row_notes(self, cols: dict[str, Any]) -> list[str]:
        """A note for the row's notes list, so tables that show notes show the provenance of
        every energy figure. Empty when there is no figure (power_note says why)."""
        if cols.get("power_provenance") is None:
            return []
        return [f"energy {cols['power_note']}"]
