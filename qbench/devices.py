"""Device descriptions (devices/*.yaml): what a device is, how to reach it, what it runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from qbench.suite.loader import SuiteSource, first_error
from qbench.suite.schema import MemberRef, Strict

REPO_DEVICES = Path(__file__).resolve().parent.parent / "devices"


class Datasheet(BaseModel):
    """Datasheet figures, each cited in a comment beside it in the device file.

    The figures below have fixed units (a bare number; "275 TOPS" is an error). Other keys
    (soc, ram_gb, tops_per_watt, ...) are allowed and hold a number or a string. Reads like a
    mapping too: `datasheet["peak_int8_tops"]`, `datasheet.get("ram_gb")`.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, int | float | str] = Field(init=False)

    peak_int8_tops: float | None = Field(
        default=None, ge=0, description="peak dense int8 throughput, 10^12 operations/s"
    )
    peak_int8_tops_sparse: float | None = Field(
        default=None, ge=0, description="peak int8 with 2:4 structured sparsity, 10^12 ops/s"
    )
    peak_fp16_tflops: float | None = Field(
        default=None, ge=0, description="peak dense fp16 throughput, 10^12 FLOP/s"
    )
    peak_fp32_tflops: float | None = Field(
        default=None, ge=0, description="peak fp32 throughput, 10^12 FLOP/s"
    )
    memory_bandwidth_gbs: float | None = Field(
        default=None, ge=0, description="peak memory bandwidth, 10^9 bytes/s"
    )
    tdp_w: float | None = Field(
        default=None, ge=0, description="thermal design power (or the top power mode), watts"
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in cls.model_fields and (
                    isinstance(value, bool) or not isinstance(value, int | float | str)
                ):
                    raise ValueError(
                        f"{key}: expected a number or a string (cite its source in a comment), "
                        f"got {type(value).__name__}"
                    )
        return data

    def as_dict(self) -> dict[str, Any]:
        """The figures given in the file (typed ones and other keys), none left out."""
        return self.model_dump(exclude_none=True)

    def __getitem__(self, key: str) -> Any:
        data = self.as_dict()
        if key not in data:
            raise KeyError(key)
        return data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def keys(self) -> Iterator[str]:
        return iter(self.as_dict())


class Device(Strict):
    name: str = Field(description="device name used in suites and rows")
    description: str = Field(default="", description="what the device is")
    kind: Literal["cpu", "gpu", "npu", "tpu"] = Field(default="cpu", description="processor")
    isa_features: list[str] = Field(default=[], description="ISA/accelerator features")
    transport: MemberRef = Field(
        default=MemberRef(name="subprocess"), description="how cells reach the device"
    )
    backends: list[str] = Field(default=[], description="backends installed on the device")
    power_meter: MemberRef | None = Field(
        default=None,
        description="power meter (see `qbench list power-meters`): a name, or {name, params}",
    )
    datasheet: Datasheet = Field(
        default_factory=Datasheet,
        description="datasheet figures (peak TOPS/TFLOPS, bandwidth, TDP), each cited",
    )
    probe: dict[str, Any] = Field(
        default={},
        description="what `qbench devices probe` detected (cores, frequency, GPUs, Edge TPU, "
        "power sensors): facts of one host at one time, not datasheet figures",
    )
    _source_path: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _cell_id_part(cls, value: str) -> str:
        # the device name is a part of every cell id, whose parts '/' separates
        if not value or "/" in value or not value.isprintable():
            raise ValueError("expected a non-empty name of printable characters without '/'")
        return value

    @property
    def source_path(self) -> Path | None:
        """The device file this description was read from (None: built in code)."""
        return self._source_path


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
    source = SuiteSource(path, what="device")
    try:
        device = Device.model_validate(source.data)
    except ValidationError as exc:
        raise first_error(source, exc) from None
    device._source_path = Path(path)
    return device


def resolve_devices(refs: list[str], suite: SuiteSource) -> list[Device]:
    """The suite's device files, loaded; two files naming the same device are refused (their
    rows would share cells and a comparison would mix two machines)."""
    devices: list[Device] = []
    files: dict[str, tuple[int, Path]] = {}
    for i, ref in enumerate(refs):
        path = find_device_file(ref, suite.path.parent)
        if path is None:
            raise suite.error(
                ["devices", i],
                f"no device file for {ref!r} (looked for "
                f"devices/{ref}.yaml beside the suite and in the repo)",
            )
        device = load_device(path)
        seen = files.get(device.name)
        if seen is not None and seen[1].resolve() != path.resolve():
            raise suite.error(
                ["devices", i],
                f"{path} names device {device.name!r}, as {seen[1]} (devices[{seen[0]}]) does: "
                "give each device file its own `name`",
            )
        if seen is None:
            files[device.name] = (i, path)
            devices.append(device)
    return devices
