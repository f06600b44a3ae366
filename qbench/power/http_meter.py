"""An external meter read over HTTP: a smart plug between the wall and the device.

Formats, as the devices answer (recorded answers under tests/data/power/, sources in SOURCES.md):

    shelly_gen1  GET /status                 meters[N].power (W), meters[N].total (watt-minutes);
                                             Shelly EM: emeters[N].power (W), .total (Wh)
    shelly_gen2  GET /rpc/Switch.GetStatus?id=N   apower (W), aenergy.total (Wh); the same
                                             object under "switch:N" in Shelly.GetStatus
    tasmota      GET /cm?cmnd=Status%208      StatusSNS.ENERGY.Power (W; a list on multi-channel
                                             devices), .Total (kWh)

A `url` with no path gets the format's path above. Power is sampled and integrated over the
window: the plugs' own energy counters step in units (1 Wmin = 60 J, 1 Wh = 3600 J) far coarser
than one benchmark window, so they are parsed but not used for it. The plug measures the whole
device at the wall, so the idle baseline matters more here than for RAPL.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

from pydantic import Field

from qbench.params import Params
from qbench.plugins import power_meters
from qbench.power.base import MeterError, PowerMeter, Probe, Reading

Format = Literal["shelly_gen1", "shelly_gen2", "tasmota"]

DEFAULT_PATHS: dict[str, str] = {
    "shelly_gen1": "/status",
    "shelly_gen2": "/rpc/Switch.GetStatus?id={channel}",
    "tasmota": "/cm?cmnd=Status%208",
}


class HttpParams(Params):
    url: str = Field(description="the meter's address (http://HOST or a full URL)")
    format: Format = Field(description="shelly_gen1 | shelly_gen2 | tasmota")
    channel: int = Field(default=0, ge=0, description="meter or switch channel on the device")
    timeout_s: float = Field(default=2.0, gt=0, description="seconds to wait for one answer")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MeterError(f"{what}: expected a number, got {value!r}")
    return float(value)


def _pick(values: Any, channel: int, what: str) -> Any:
    if not isinstance(values, list) or channel >= len(values):
        raise MeterError(f"{what}: no channel {channel}")
    return values[channel]


def parse_shelly_gen1(doc: dict[str, Any], channel: int = 0) -> tuple[float, float | None]:
    """(watts, total joules or None) from /status (or /meter/N, or /emeter/N)."""
    if "meters" in doc:
        meter, unit_j = _pick(doc["meters"], channel, "meters"), 60.0  # total: watt-minutes
    elif "emeters" in doc:
        meter, unit_j = _pick(doc["emeters"], channel, "emeters"), 3600.0  # Shelly EM: Wh
    elif "power" in doc:
        meter, unit_j = doc, 60.0
    else:
        raise MeterError("Shelly Gen1 answer has no meters[] or emeters[]")
    if meter.get("is_valid") in (False, "false"):
        raise MeterError(f"Shelly meter {channel} reports is_valid: false")
    total = meter.get("total")
    return (
        _number(meter.get("power"), "meters.power"),
        None if total is None else _number(total, "meters.total") * unit_j,
    )


def parse_shelly_gen2(doc: dict[str, Any], channel: int = 0) -> tuple[float, float | None]:
    """(watts, total joules or None) from Switch.GetStatus (or Shelly.GetStatus)."""
    switch = doc if "apower" in doc else doc.get(f"switch:{channel}")
    if not isinstance(switch, dict) or "apower" not in switch:
        raise MeterError(f"Shelly Gen2 answer has no apower (nor switch:{channel}.apower)")
    energy = switch.get("aenergy") or {}
    total = energy.get("total") if isinstance(energy, dict) else None
    return (
        _number(switch["apower"], "apower"),
        None if total is None else _number(total, "aenergy.total") * 3600.0,  # Wh
    )


def parse_tasmota(doc: dict[str, Any], channel: int = 0) -> tuple[float, float | None]:
    """(watts, total joules or None) from Status 8 / Status 10 (or a tele SENSOR message)."""
    sns = doc.get("StatusSNS", doc)
    energy = sns.get("ENERGY") if isinstance(sns, dict) else None
    if not isinstance(energy, dict) or "Power" not in energy:
        raise MeterError("Tasmota answer has no StatusSNS.ENERGY.Power")
    power = energy["Power"]
    if isinstance(power, list):  # multi-channel devices report one value per channel
        power = _pick(power, channel, "ENERGY.Power")
    total = energy.get("Total")
    if isinstance(total, list):
        total = _pick(total, channel, "ENERGY.Total")
    return (
        _number(power, "ENERGY.Power"),
        None if total is None else _number(total, "ENERGY.Total") * 3.6e6,  # kWh
    )


PARSERS = {"shelly_gen1": parse_shelly_gen1, "shelly_gen2": parse_shelly_gen2,
           "tasmota": parse_tasmota}  # fmt: skip


def meter_url(params: HttpParams) -> str:
    url = params.url if "://" in params.url else f"http://{params.url}"
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/") and not parts.query:
        url = url.rstrip("/") + DEFAULT_PATHS[params.format].format(channel=params.channel)
    return url


class HttpProbe(Probe):
    def __init__(self, params: HttpParams) -> None:
        self.params = params
        self.url = meter_url(params)
        self.parse = PARSERS[params.format]
        self.sensor = f"{params.format} at {self.url}"
        self.last_total_j: float | None = None  # the device's own counter, for the record

    def fetch(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.params.timeout_s) as resp:
                body = resp.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MeterError(f"{self.url} unreachable ({reason})") from exc
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise MeterError(f"{self.url} did not answer JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise MeterError(f"{self.url} answered {type(doc).__name__}, expected an object")
        return doc

    def read(self) -> Reading:
        start = time.monotonic()
        doc = self.fetch()
        end = time.monotonic()
        watts, total = self.parse(doc, self.params.channel)
        self.last_total_j = total
        return Reading(t=(start + end) / 2, watts=watts)


@power_meters.register
class HttpMeter(PowerMeter):
    name = "http"
    description = "smart plug read over HTTP: Shelly Gen1/Gen2 or Tasmota JSON, sampled"
    Params = HttpParams
    default_cadence_s = 1.0  # the plugs refresh their power reading about once a second

    def unavailable(self, params: Params | None = None) -> str | None:
        if not isinstance(params, HttpParams):
            return "no sensor: the http meter needs url and format parameters"
        try:
            HttpProbe(params).read()
        except MeterError as exc:
            return f"no sensor: {exc}"
        return None

    def open(self, params: Params) -> HttpProbe:
        assert isinstance(params, HttpParams)
        return HttpProbe(params)
