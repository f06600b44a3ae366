"""Measure on an Android device over adb: prepare here, measure there, one JSON row back.

    transport:
      name: adb
      params: {serial: R58M12ABCDE}          # omit with exactly one device attached

Two ways to measure on the device:

* remote_python set (a device with Python and qbench, e.g. Termux): like the ssh transport,
  the artifact, eval inputs, reference outputs, cell.json and a rewritten prepared.json are
  pushed to a fresh folder under remote_dir and `qbench.agent measure` runs there; the row
  is the same as the local one, accuracy and fidelity included.
* remote_python unset (a stock phone): TFLite's native `benchmark_model` (push it once, e.g.
  to /data/local/tmp/benchmark_model) times the pushed .tflite on random inputs. The row
  gets latency (mean, min, std, median where the binary prints percentiles), load time and
  memory; accuracy and fidelity stay empty, and so do device_cpu_model/device_cpu_flags
  (no qbench agent ran there to read the device's CPU), each with a note saying why.

Each stage runs on the device under `timeout`, with its process id kept so that what is
left can be killed before the folder is removed, whatever happened. A missing adb client,
or a device that is absent, offline or unauthorized, skips the cell with the reason.

Command lines and output parsing are pure functions (adb_command, benchmark_model_argv,
parse_devices, parse_benchmark_model), tested against recorded real outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.params import Params
from qbench.plan import Cell
from qbench.plugins import transports
from qbench.transports import _remote
from qbench.transports._remote import failed as _failed
from qbench.transports.base import Transport, traceback_tail
from qbench.transports.subprocess import THREAD_VARS, run_stage, wait_or_kill

GUARD_S = 15
HOUSEKEEPING_S = 120


class AdbParams(Params):
    serial: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        max_length=128,
        description="device serial (`adb devices`); default: the only one attached",
    )
    adb: str = Field(default="adb", description="adb client (name on PATH or path)")
    remote_dir: str = Field(
        default="/data/local/tmp/qbench",
        description="folder on the device under which each cell gets its own, removed after",
    )
    remote_python: str | None = Field(
        default=None,
        description="interpreter on the device that runs qbench's agent; "
        "unset: time .tflite artifacts with the native benchmark_model instead",
    )
    benchmark_binary: str = Field(
        default="/data/local/tmp/benchmark_model",
        description="TFLite benchmark_model on the device (used without remote_python)",
    )
    benchmark_args: list[str] = Field(
        default=[], description="extra benchmark_model flags, e.g. --use_gpu=true"
    )
    forward_env: list[str] = Field(
        default=list(_remote.FORWARDED_ENV_DEFAULT),
        description="host environment variables passed on to the device when set",
    )
    env: dict[str, str] = Field(default={}, description="extra environment on the device")


# --- pure functions: command lines and output parsing -------------------------------------


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str  # device | unauthorized | offline | no permissions (...) | ...
    attrs: dict[str, str] = field(default_factory=dict)  # usb, product, model, transport_id

    def describe(self) -> str:
        model = self.attrs.get("model")
        return f"{self.serial} ({self.state}{', ' + model if model else ''})"


_ATTR = re.compile(r"^([a-z_]+):(\S*)$")


def parse_devices(text: str) -> list[AdbDevice]:
    """Devices in `adb devices [-l]` output (tab or space separated; daemon chatter skipped)."""
    devices = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "adb: ")):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        serial, rest = parts[0], parts[1].split()
        attrs: dict[str, str] = {}
        while rest and (m := _ATTR.match(rest[-1])):
            attrs[m.group(1)] = m.group(2)
            rest.pop()
        devices.append(AdbDevice(serial, " ".join(rest), dict(reversed(attrs.items()))))
    return devices


_STATE_HINTS = {
    "unauthorized": "accept the 'Allow USB debugging' prompt on the device",
    "offline": "reconnect it, or run `adb kill-server`",
    "recovery": "boot it into Android",
    "bootloader": "boot it into Android",
    "sideload": "boot it into Android",
}


def select_device(devices: list[AdbDevice], serial: str | None) -> tuple[AdbDevice | None, str]:
    """The device to use, or None and why not."""
    listed = ", ".join(d.describe() for d in devices) or "none"
    if serial is not None:
        match = next((d for d in devices if d.serial == serial), None)
        if match is None:
            return None, f"no device {serial} attached (adb devices lists: {listed})"
    else:
        ready = [d for d in devices if d.state == "device"]
        if len(ready) > 1:
            return None, (
                f"{len(ready)} devices attached ({listed}); set `serial` in the device file"
            )
        match = ready[0] if ready else (devices[0] if len(devices) == 1 else None)
        if match is None:
            return None, f"no device attached (adb devices lists: {listed})"
    if match.state != "device":
        hint = _STATE_HINTS.get(match.state, "")
        if " " in match.state:  # e.g. "no permissions (missing udev rules? ...); see [...]"
            return None, f"device {match.serial} is not usable: {match.state}"
        return None, f"device {match.serial} is {match.state}" + (f": {hint}" if hint else "")
    return match, ""


def adb_command(adb: str, serial: str | None, *args: str) -> list[str]:
    return [adb, *(["-s", serial] if serial else []), *args]


def shell_command(adb: str, serial: str | None, script: str) -> list[str]:
    """`adb shell` running a POSIX sh script (adb hands the string to the device's sh -c)."""
    return adb_command(adb, serial, "shell", "sh -c " + shlex.quote(script))


def _flag(value: float) -> str:
    return f"{value:g}"


def benchmark_model_argv(
    binary: str,
    graph: str,
    threads: int,
    measurement: dict[str, Any],
    xnnpack: bool = True,
    max_secs: float | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """benchmark_model's command line for one cell: the suite's warm-up and timing budget.

    Like qbench's own loop, benchmark_model runs at least num_runs AND at least min_secs;
    warmup_min_secs=0 makes the warm-up exactly `warmup` runs.
    """
    argv = [
        binary,
        f"--graph={graph}",
        f"--num_threads={threads}",
        f"--warmup_runs={measurement['warmup']}",
        "--warmup_min_secs=0",
        f"--num_runs={measurement['min_iters']}",
        f"--min_secs={_flag(measurement['min_seconds'])}",
        f"--use_xnnpack={'true' if xnnpack else 'false'}",
    ]
    if max_secs is not None:
        argv.append(f"--max_secs={_flag(max_secs)}")
    return [*argv, *extra]


_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_PREFIX = r"^(?:[A-Z]+: |[IWE] tflite\s*: )?"  # "INFO: " or logcat's "I tflite  : "
_SUMMARY = re.compile(
    _PREFIX + rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
    rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}"
)
_OLD_SUMMARY = re.compile(
    _PREFIX + rf"Average inference timings in us: Warmup: {_NUM}, Init: {_NUM}, "
    rf"(?:no stats|Inference): {_NUM}"
)
_STATS = re.compile(_PREFIX + r"count=\d")
_KV = re.compile(rf"([a-z0-9_]+)={_NUM}")
# Before TF 2.4 the footprint delta was labelled "Peak memory footprint": same figure.
_PEAK_OLD = re.compile(_PREFIX + rf"Peak memory footprint \(MB\): init={_NUM} overall={_NUM}")
_DELTA = re.compile(
    _PREFIX + rf"Memory footprint delta from the start of the tool \(MB\): "
    rf"init={_NUM} overall={_NUM}"
)
_PEAK_MONITOR = re.compile(
    _PREFIX + rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}"
)


def parse_benchmark_model(text: str) -> dict[str, float]:
    """Figures from benchmark_model's log, in its units (us, MB). {} if there is no summary.

    Keys: init_us, first_us, warmup_avg_us, inference_avg_us; from the timed run's stats line
    (the last `count=` line before the summary; op-profiling tables after it have their own)
    count, first, curr, min, max, avg, std and, where printed, p5, median, p95 (us); and,
    where printed, mem_delta_init_mb/mem_delta_overall_mb (max RSS growth since the tool
    started, labelled "Peak memory footprint" before TF 2.4) and peak_mem_mb (the process's
    footprint by periodic monitoring, --report_peak_memory_footprint=true).
    """
    lines = [ln.strip() for ln in text.splitlines()]
    out: dict[str, float] = {}
    summary_at = None
    for i, line in enumerate(lines):
        if m := _SUMMARY.match(line):
            out.update(zip(("init_us", "first_us", "warmup_avg_us", "inference_avg_us"),
                           map(float, m.groups()), strict=True))  # fmt: skip
            summary_at = i
        elif m := _OLD_SUMMARY.match(line):
            out.update(zip(("warmup_avg_us", "init_us", "inference_avg_us"),
                           map(float, m.groups()), strict=True))  # fmt: skip
            summary_at = i
        elif (m := _PEAK_OLD.match(line)) or (m := _DELTA.match(line)):
            out["mem_delta_init_mb"], out["mem_delta_overall_mb"] = map(float, m.groups())
        elif m := _PEAK_MONITOR.match(line):
            out["peak_mem_mb"] = float(m.group(1))
    if summary_at is None:
        return {}
    stats = next((ln for ln in reversed(lines[:summary_at]) if _STATS.match(ln)), None)
    if stats is not None:
        out.update({k: float(v) for k, v in _KV.findall(stats)})
    return out


def benchmark_row(parsed: dict[str, float], batch: int) -> dict[str, Any]:
    """Result columns from parse_benchmark_model's figures."""
    ms = 1e-3
    mean = parsed["inference_avg_us"] * ms
    row: dict[str, Any] = {
        "load_s": parsed["init_us"] * 1e-6 if "init_us" in parsed else None,
        "latency_mean_ms": mean,
        "throughput_ips": batch * 1000.0 / mean if mean > 0 else None,
        "repeats": 1,
        "latency_samples_ms": [],
        "latency_repeat_p50s_ms": [],
    }
    if "count" in parsed:
        row["iters"] = int(parsed["count"])
    for key, column in (("min", "latency_min_ms"), ("std", "latency_std_ms"),
                        ("median", "latency_p50_ms")):  # fmt: skip
        if key in parsed:
            row[column] = parsed[key] * ms
    if "median" in parsed:
        row["latency_repeat_p50s_ms"] = [parsed["median"] * ms]
    # Peak resident memory only from periodic monitoring: the footprint "delta from the start
    # of the tool" leaves out what the process held before, so it is a note, not the column.
    notes = []
    if parsed.get("peak_mem_mb", 0) > 0:
        row["peak_rss_mb"] = parsed["peak_mem_mb"]
    elif "mem_delta_overall_mb" in parsed:
        notes.append(
            f"benchmark_model: memory grew by {parsed['mem_delta_overall_mb']:g} MB after it "
            "started (not the peak RSS; add --report_peak_memory_footprint=true to "
            "benchmark_args for that)"
        )
    row["notes"] = notes
    return row


# --- the transport -------------------------------------------------------------------------


class _Adb:
    def __init__(self, params: AdbParams, serial: str) -> None:
        self.params, self.serial = params, serial

    def run(self, *args: str, timeout: float = HOUSEKEEPING_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            adb_command(self.params.adb, self.serial, *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )

    def shell(
        self, script: str, timeout: float = HOUSEKEEPING_S
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            shell_command(self.params.adb, self.serial, script),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )

    def stage(self, script: str, limit: float, log: Path) -> tuple[int | None, str]:
        """Run a stage script with a local guard; (exit status or None if the guard fired,
        the channel's stdout)."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                shell_command(self.params.adb, self.serial, script),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if not wait_or_kill(proc, limit + _remote.KILL_AFTER_S + GUARD_S):
                return None, ""
        text = log.read_text(errors="replace")
        return _remote.exit_status(text, proc.returncode), text


# benchmark_model rows: no qbench agent ran on the device, so nothing read its CPU.
NO_DEVICE_CPU_NOTE = (
    "device_cpu_model and device_cpu_flags empty: benchmark_model runs without qbench's "
    "agent (no Python on the device), so nothing read the device's CPU; the report gives "
    "this row no hardware warning (set remote_python to record them)"
)


def _skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "error": reason}


@transports.register
class AdbTransport(Transport):
    name = "adb"
    description = "prepare here, measure on an Android device over adb (agent or benchmark_model)"
    Params = AdbParams

    def run_cell(self, cell: Cell, workdir: Path, params: Params) -> dict[str, Any]:
        assert isinstance(params, AdbParams)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cell.json").write_text(json.dumps(cell.to_json()))
        deadline = time.monotonic() + cell.measurement["timeout_s"]

        if shutil.which(params.adb) is None:
            return _skipped(
                f"adb transport: no adb client {params.adb!r} on this host "
                "(install Android platform-tools, or set `adb` in the device file)"
            )
        native = params.remote_python is None
        if native:
            why = self._native_unsupported(cell)
            if why:
                return _skipped(why)
        try:
            listing = subprocess.run(
                [params.adb, "devices", "-l"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=HOUSEKEEPING_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return _skipped(f"adb devices failed: {type(exc).__name__}: {exc}")
        if listing.returncode != 0:
            return _skipped(
                f"adb devices failed (exit code {listing.returncode}): "
                f"{_remote.last_line(listing.stderr)}"
            )
        device, why = select_device(parse_devices(listing.stdout), params.serial)
        if device is None:
            return _skipped(f"adb: {why}")
        adb = _Adb(params, device.serial)

        env = dict(os.environ)
        env.update(dict.fromkeys(THREAD_VARS, str(os.cpu_count() or 1)))
        prepared = run_stage(sys.executable, "prepare", workdir, env, deadline - time.monotonic())
        if prepared.get("status") != "ok":
            return {**prepared, "error": f"prepare: {prepared.get('error', '')}"}
        (workdir / "prepared.json").write_text(json.dumps(prepared))

        where = f"adb device {device.describe()}"
        remote_dir = posixpath.join(params.remote_dir, f"qbench-{secrets.token_hex(8)}")
        try:
            started = time.monotonic()
            # benchmark_model reads the artifact only; the agent, everything measure opens.
            files = _remote.measure_files(
                {"artifact_path": prepared["artifact_path"]} if native else prepared
            )
            problem = self._push(adb, prepared, files, remote_dir, workdir, native)
            if problem is not None:
                return {**prepared, **problem}
            copy_s = time.monotonic() - started
            if native:
                graph = posixpath.join(remote_dir, files[0][2])
                measured = self._benchmark_model(adb, cell, params, graph, remote_dir, workdir,
                                                 deadline, where)  # fmt: skip
                how = f"timed by benchmark_model on {where}"
            else:
                measured = self._agent(adb, cell, params, remote_dir, workdir, deadline, where)
                how = f"measured over adb on {where}"
            merged = _remote.merge(prepared, measured, f"{how}; pushing files took {copy_s:.2f} s")
            merged["remote_host"] = f"adb:{device.serial}"
            merged["copy_s"] = copy_s
            return merged
        except subprocess.TimeoutExpired as exc:
            return {**prepared, "status": "timeout", "error": f"adb: {exc}"}
        except OSError as exc:
            return {**prepared, "status": "failed", "error": f"adb: {type(exc).__name__}: {exc}"}
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                adb.shell(_remote.cleanup_script(remote_dir, ("measure", "bench")))

    @staticmethod
    def _native_unsupported(cell: Cell) -> str | None:
        if cell.artifact_format != "tflite" or cell.backend != "litert":
            return (
                f"adb without remote_python times .tflite artifacts of the litert backend "
                f"with benchmark_model; this cell is {cell.backend}/{cell.artifact_format} "
                "(set remote_python to run qbench's agent on the device)"
            )
        if cell.batch != 1:
            return (
                f"adb without remote_python: benchmark_model runs the model's own batch; "
                f"batch {cell.batch} needs remote_python"
            )
        return None

    @staticmethod
    def _push(
        adb: _Adb,
        prepared: dict[str, Any],
        files: list[tuple[str, Path, str]],
        remote_dir: str,
        workdir: Path,
        native: bool,
    ) -> dict[str, Any] | None:
        """Create the cell's folder on the device and push what the stage reads."""
        made = adb.shell(f"mkdir -p {shlex.quote(remote_dir)}")
        if made.returncode != 0:
            return _failed(
                f"adb: cannot create {remote_dir} on the device: "
                f"{_remote.last_line(made.stderr + made.stdout)}"
            )
        uploads: list[tuple[Path, str]] = [(local, name) for _, local, name in files]
        if not native:
            on_device = _remote.remote_prepared(prepared, files, remote_dir)
            (workdir / "prepared.remote.json").write_text(json.dumps(on_device))
            uploads += [
                (workdir / "cell.json", "cell.json"),
                (workdir / "prepared.remote.json", "prepared.json"),
            ]
        for local, name in uploads:
            pushed = adb.run("push", str(local), posixpath.join(remote_dir, name))
            if pushed.returncode != 0:
                return _failed(
                    f"adb push {local.name} failed: "
                    f"{_remote.last_line(pushed.stderr + pushed.stdout)}"
                )
        return None

    @staticmethod
    def _agent(
        adb: _Adb,
        cell: Cell,
        params: AdbParams,
        remote_dir: str,
        workdir: Path,
        deadline: float,
        where: str,
    ) -> dict[str, Any]:
        limit = deadline - time.monotonic()
        if limit <= 0:
            return _remote.timeout_result("measure", 0)
        assert params.remote_python is not None
        env = _remote.remote_env(cell, remote_dir, dict(os.environ), params.forward_env, params.env)
        argv = _remote.measure_argv(params.remote_python, remote_dir)
        script = _remote.stage_script(remote_dir, argv, env, limit, "measure")
        code, _ = adb.stage(script, limit, workdir / "adb-measure.log")
        if code is None or code == _remote.TIMEOUT_EXIT:
            return _remote.timeout_result("measure", limit)
        fetched = adb.run("exec-out", "cat " + shlex.quote(f"{remote_dir}/measure.json"))
        result = _remote.load_json_text(fetched.stdout) if fetched.returncode == 0 else None
        if result is not None:
            return result
        tail = adb.shell(f"tail -n 20 {shlex.quote(remote_dir + '/measure.stderr')}")
        why = _remote.describe_remote_exit("measure", code, _remote.last_line(tail.stdout), where)
        return _failed(why, traceback=traceback_tail(tail.stdout))

    @staticmethod
    def _benchmark_model(
        adb: _Adb,
        cell: Cell,
        params: AdbParams,
        graph: str,
        remote_dir: str,
        workdir: Path,
        deadline: float,
        where: str,
    ) -> dict[str, Any]:
        limit = deadline - time.monotonic()
        if limit <= 0:
            return _remote.timeout_result("benchmark_model", 0)
        argv = benchmark_model_argv(
            params.benchmark_binary,
            graph,
            cell.threads,
            cell.measurement,
            xnnpack=bool(cell.backend_params.get("xnnpack", True)),
            max_secs=max(1.0, limit - 5),
            extra=params.benchmark_args,
        )
        env = dict.fromkeys(THREAD_VARS, str(cell.threads)) | dict(params.env)
        script = _remote.stage_script(remote_dir, argv, env, limit, "bench")
        code, _ = adb.stage(script, limit, workdir / "adb-bench.log")
        if code is None or code == _remote.TIMEOUT_EXIT:
            return _remote.timeout_result("benchmark_model", limit)
        q = shlex.quote
        log = adb.shell(f"cat {q(remote_dir + '/bench.stdout')} {q(remote_dir + '/bench.stderr')}")
        text = log.stdout
        (workdir / "benchmark_model.log").write_text(text)
        parsed = parse_benchmark_model(text)
        if code != 0 or not parsed:
            why = _remote.describe_remote_exit("benchmark_model", code, _remote.last_line(text),
                                               where)  # fmt: skip
            if code == 0:
                why = (
                    f"benchmark_model printed no 'Inference timings in us' line on {where}; "
                    f"last line: {_remote.last_line(text)}"
                )
            return _failed(why)
        row = benchmark_row(parsed, cell.batch)
        return {
            "status": "ok",
            "runtime_version": "TFLite benchmark_model",
            "warmup_iters": cell.measurement["warmup"],
            **row,
            "notes": [
                "benchmark_model times random inputs: no accuracy or fidelity "
                "(set remote_python to run qbench's agent on the device)",
                NO_DEVICE_CPU_NOTE,
                *row["notes"],
            ],
        }
