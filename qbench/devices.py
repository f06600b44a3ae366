"""Device descriptions (devices/*.yaml): what a device is, how to reach it, what it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from qbench.suite.loader import SuiteError, SuiteSource, first_error
from qbench.suite.schema import MemberRef, Strict

REPO_DEVICES = Path(__file__).resolve().parent.parent / "devices"


class Device(Strict):
    name: str = Field(description="device name used in suites and rows")
    description: str = Field(default="", description="what the device is")
    kind: Literal["cpu", "gpu", "npu", "tpu"] = Field(default="cpu", description="processor")
    isa_features: list[str] = Field(default=[], description="ISA/accelerator features")
    transport: MemberRef = Field(
        default=MemberRef(name="subprocess"), description="how cells reach the device"
    )
    backends: list[str] = Field(default=[], description="backends installed on the device")
    power_meter: str | None = Field(default=None, description="power meter plugin, if any")
    datasheet: dict[str, float | str] = Field(
        default={}, description="datasheet figures (peak TOPS, bandwidth, TDP), each cited"
    )


def find_device_file(ref: str, suite_dir: Path) -> Path | None:
    candidates = [Path(ref)] if ref.endswith((".yaml", ".yml")) else []
    for folder in (
        suite_dir / "devices",
        suite_dir.parent / "devices",
        Path.cwd() / "devices",
        REPO_DEVICES,
    ):
        candidates.append(folder / f"{ref}.yaml")
    if ref.endswith((".yaml", ".yml")):
        candidates.append(suite_dir / ref)
    return next((p for p in candidates if p.is_file()), None)


def load_device(path: Path) -> Device:
    source = SuiteSource(path)
    try:
        return Device.model_validate(source.data)
    except ValidationError as exc:
        raise first_error(source, exc) from None


def resolve_devices(refs: list[str], suite: SuiteSource) -> list[Device]:
    devices = []
    for i, ref in enumerate(refs):
        path = find_device_file(ref, suite.path.parent)
        if path is None:
            raise suite.error(
                ["devices", i],
                f"no device file for {ref!r} (looked for "
                f"devices/{ref}.yaml beside the suite and in the repo)",
            )
        try:
            devices.append(load_device(path))
        except SuiteError:
            raise
    return devices
