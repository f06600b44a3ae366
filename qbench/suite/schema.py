"""The suite file's typed schema. Every field has a default and a description."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberRef(Strict):
    """A plugin member with parameters. In YAML, a bare string is shorthand for {name: ...}."""

    name: str = Field(description="registered member name (see `qbench list`)")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="member parameters; a list value expands into one cell per element",
    )
    label: str | None = Field(
        default=None, description="name shown in rows and reports (default: the member name)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # YAML reads a bare `null` as no value at all, so `backends: [null]` would name nothing.
        if value is None or (isinstance(value, dict) and "name" in value and value["name"] is None):
            raise ValueError(
                'empty name: YAML reads a bare null as no value; write "null" (quoted) to '
                "name the null backend"
            )
        named = value.get("name") if isinstance(value, dict) else value
        if isinstance(named, bool):
            raise ValueError(
                f"YAML reads a bare {'yes/on/true' if named else 'no/off/false'} as a boolean, "
                "not a name: quote it"
            )
        return {"name": value} if isinstance(value, str) else value


# Bounds on numbers a suite gives: far beyond any real use, so a typo (an extra three zeros)
# or a crafted file is refused in one line instead of running for days or exhausting memory.
MAX_BATCH = 65_536
MAX_THREADS = 1_024
MAX_LIST = 1_000  # values in one list of a suite (batch sizes, thread counts, fractions)
MAX_PROMPT_TOKENS = 131_072  # 128k tokens: the longest context window of current local LMs


class Scenario(Strict):
    batch: list[int] = Field(
        default=[1],
        max_length=MAX_LIST,
        description=f"batch sizes (1..{MAX_BATCH}); each is a cell",
    )
    threads: list[int] = Field(
        default=[1],
        max_length=MAX_LIST,
        description=f"intra-op thread counts (1..{MAX_THREADS}); each is a cell",
    )

    @field_validator("batch", "threads", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | list):
            raise ValueError("expected a positive integer or a list of them")
        return [value] if isinstance(value, int) else value

    @field_validator("batch", "threads")
    @classmethod
    def _positive(cls, value: list[int], info: Any) -> list[int]:
        if not value or any(v < 1 for v in value):
            raise ValueError("expected a positive integer or a non-empty list of them")
        top = MAX_BATCH if info.field_name == "batch" else MAX_THREADS
        too_big = [v for v in value if v > top]
        if too_big:
            raise ValueError(f"{too_big[0]} is more than any device runs: at most {top}")
        return value


class Measurement(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    warmup: int = Field(
        default=10, ge=0, le=1_000_000, description="untimed iterations before timing"
    )
    min_iters: int = Field(
        default=50, ge=1, le=10_000_000, description="time at least this many iterations"
    )
    min_seconds: float = Field(
        default=1.0, ge=0, le=3600, description="...and at least this long (at most an hour)"
    )
    max_iters: int = Field(
        default=100_000, ge=1, le=1_000_000_000, description="stop a round after this many"
    )
    repeats: int = Field(
        default=1, ge=1, le=1000, description="timing rounds, each min_iters/min_seconds"
    )
    timeout_s: float = Field(
        default=900.0,
        gt=0,
        le=7 * 24 * 3600,
        description="a cell's wall-clock limit (at most a week)",
    )
    prompt_lengths: list[int] = Field(
        default=[128],
        min_length=1,
        max_length=64,
        description="causal LMs: prompt lengths (tokens) whose prefill / time to first token "
        f"is measured; the last is the prompt decode starts from (1..{MAX_PROMPT_TOKENS}: "
        "beyond the context window of any model qbench runs, a longer prompt is a typo that "
        "would fill memory before the cell could fail)",
    )
    decode_tokens: int = Field(
        default=64, ge=1, le=100_000,
        description="causal LMs: tokens generated one at a time (greedy, KV cache) per round",
    )  # fmt: skip

    @field_validator("prompt_lengths")
    @classmethod
    def _positive_lengths(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError("every prompt length must be a positive number of tokens")
        too_long = [n for n in value if n > MAX_PROMPT_TOKENS]
        if too_long:
            raise ValueError(f"{too_long[0]} tokens: at most {MAX_PROMPT_TOKENS} (longer than "
                             "any model's context window)")  # fmt: skip
        return value


class Accuracy(Strict):
    dataset: MemberRef = Field(
        default=MemberRef(name="auto"),
        description="dataset for accuracy, fidelity and calibration of every model: a name or "
        "{name, params} (see `qbench list datasets`); auto: each model's own",
    )
    samples: int = Field(
        default=500, ge=1, le=10_000_000, description="at most this many evaluation inputs"
    )


class Calibration(Strict):
    samples: int = Field(
        default=64, ge=1, le=1_000_000, description="representative inputs for calibration"
    )
    seed: int = Field(
        default=0,
        ge=0,
        lt=2**32,
        description="seed that picks the calibration inputs (0 to 2^32-1: numpy takes no "
        "negative seed, and its legacy seeding none beyond 32 bits)",
    )
    outlier_fraction: list[float] = Field(
        default=[0.0],
        max_length=MAX_LIST,
        description="share of calibration inputs made outliers (to test robust calibrators); "
        "a list gives each calibrating method one cell per value",
    )
    outlier_scale: float = Field(
        default=10.0,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="outlier inputs are the real input times this factor",
    )

    @field_validator("outlier_fraction", mode="before")
    @classmethod
    def _fraction_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("outlier_fraction")
    @classmethod
    def _fractions_in_range(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 <= v <= 1 for v in value):
            raise ValueError("expected a fraction from 0 to 1, or a non-empty list of them")
        return value


class Power(Strict):
    """Power and energy. In YAML, a bare mode is shorthand: `power: estimate`."""

    mode: Literal["measure", "estimate", "off"] = Field(
        default="measure",
        description="measure: read a power meter (empty, with the reason, where there is none); "
        "estimate: TDP x CPU utilisation, every figure marked estimated; off: no power columns",
    )
    meter: MemberRef | None = Field(
        default=None,
        description="power meter (see `qbench list power-meters`); default: the device's "
        "power_meter, else a sensor of the device itself (rapl on a cpu, nvml on a gpu)",
    )
    cadence_s: float | None = Field(
        default=None,
        gt=0,
        le=60,
        description="seconds between meter reads; default: the meter's own "
        "(rapl 1, nvml 0.1, http 1, command 1)",
    )
    idle_s: float = Field(
        default=1.0,
        ge=0,
        le=600,
        description="idle baseline measured before the timed window, seconds (0: none)",
    )
    tdp_w: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="TDP for mode estimate, watts; default: the device datasheet's tdp_w",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` (or no/false) as false and `on` as true: take them as meant
        if isinstance(value, bool):
            return {"mode": "measure" if value else "off"}
        if isinstance(value, dict) and isinstance(value.get("mode"), bool):
            return {**value, "mode": "measure" if value["mode"] else "off"}
        return {"mode": value} if isinstance(value, str) else value


class Rule(Strict):
    """Cell fields mapped to fnmatch patterns (or lists of them); all given fields must match."""

    model: str | list[str] | None = None
    method: str | list[str] | None = None
    backend: str | list[str] | None = None
    device: str | list[str] | None = None
    batch: int | list[int] | None = None
    threads: int | list[int] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Rule:
        if not self.model_dump(exclude_none=True):
            raise ValueError(
                "a rule needs at least one of model, method, backend, device, batch, threads"
            )
        return self


class Suite(Strict):
    name: str = Field(
        min_length=1,
        max_length=100,
        description="suite name, stored with every row (1-100 printable characters; the "
        "default report is reports/NAME.html with anything but letters, digits, . _ - replaced)",
    )
    description: str = Field(default="", description="what this suite is for")
    models: list[MemberRef] = Field(min_length=1, description="models (see `qbench list models`)")
    methods: list[MemberRef] = Field(
        default=[MemberRef(name="fp32")], min_length=1, description="quantization methods"
    )
    backends: list[MemberRef] = Field(
        default=[MemberRef(name="onnxruntime")], min_length=1, description="runtimes"
    )
    devices: list[str] = Field(
        default=["local"],
        min_length=1,
        description="device names (devices/NAME.yaml beside the suite's folder) or paths",
    )
    scenario: Scenario = Field(default_factory=Scenario, description="batch sizes and threads")
    measurement: Measurement = Field(default_factory=Measurement, description="timing settings")
    accuracy: Accuracy = Field(default_factory=Accuracy, description="accuracy settings")
    calibration: Calibration = Field(default_factory=Calibration, description="calibration")
    power: Power = Field(
        default_factory=Power,
        description="power and energy: measure, estimate or off (a bare YAML off/false is off)",
    )
    include: list[Rule] = Field(
        default=[], description="if given, keep only cells matching at least one rule"
    )
    exclude: list[Rule] = Field(default=[], description="drop cells matching any rule")
    output: str = Field(
        default="results", min_length=1, description="store directory (relative to cwd)"
    )
    report: str | None = Field(
        default=None, description="HTML report written after the run (relative to cwd)"
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("expected printable characters (no newline, tab or control character)")
        return value
