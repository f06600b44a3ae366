"""What the transports that measure on another machine (ssh, adb) share.

The host prepares (it has the compilers, torch and the artifact cache); the device only
measures. So the device needs exactly the files that `qbench.agent measure` opens: the
artifact (and the metadata kept beside it, which some backends read), the eval inputs and the
fp32 reference outputs. They travel under a fresh per-cell folder on the device, prepared.json
is rewritten to name them there, and the folder is removed after the cell whatever happened.

On the device a stage runs under `timeout`, in a session of its own (`setsid`, where the
device has it), in the background of a POSIX shell that records its process id: the
transport can always kill what is left (the whole process group) before it removes the
folder, even when the connection that started the stage is gone.
"""

from __future__ import annotations

import json
import math
import posixpath
import shlex
from pathlib import Path
from typing import Any

from qbench.cache import meta_path
from qbench.plan import Cell
from qbench.transports.subprocess import THREAD_VARS, agent_argv, describe_exit_code

# Keys of prepare's result that name files measure opens; any other "*_path" key naming an
# existing file travels too, so a new path added to prepare reaches the device unchanged.
MEASURE_PATH_KEYS = ("artifact_path", "eval_path", "reference_path")

# Seconds the remote `timeout` waits after SIGTERM before SIGKILL.
KILL_AFTER_S = 2
# Exit status of GNU/toybox/busybox `timeout` when the command ran out of time.
TIMEOUT_EXIT = 124
# Exit status the stage script returns when it cannot enter its workdir.
NO_WORKDIR_EXIT = 97

FORWARDED_ENV_DEFAULT = ("QBENCH_PLUGINS",)
EXIT_MARKER = "qbench-exit="


def measure_files(prepared: dict[str, Any]) -> list[tuple[str, Path, str]]:
    """(prepared key, local file, name in the remote folder) for every file measure reads.

    Names keep the file's own name (cache entries are named by content hash, the suffix tells
    backends the format); a clash gets the key as a prefix. The metadata beside a file
    (NAME.meta.json, read by e.g. the edgetpu backend) travels under the matching name with
    key "" (it is not named in prepared.json).
    """
    out: list[tuple[str, Path, str]] = []
    used: set[str] = set()
    keys = list(MEASURE_PATH_KEYS) + sorted(
        k for k in prepared if k.endswith("_path") and k not in MEASURE_PATH_KEYS
    )
    for key in keys:
        value = prepared.get(key)
        if not isinstance(value, str) or not value:
            continue
        local = Path(value)
        if not local.is_file():
            if key in MEASURE_PATH_KEYS:
                raise FileNotFoundError(f"prepare named {key}={value}, which does not exist")
            continue
        name = local.name if local.name not in used else f"{key}-{local.name}"
        used.add(name)
        out.append((key, local, name))
        meta = meta_path(local)
        if meta.is_file():
            out.append(("", meta, name + ".meta.json"))
            used.add(name + ".meta.json")
    return out


def remote_prepared(
    prepared: dict[str, Any], files: list[tuple[str, Path, str]], remote_dir: str
) -> dict[str, Any]:
    """prepared.json as the device sees it: each shipped path rewritten under remote_dir."""
    out = dict(prepared)
    for key, _, name in files:
        if key:
            out[key] = posixpath.join(remote_dir, name)
    return out


def remote_env(
    cell: Cell,
    remote_dir: str,
    local_env: dict[str, str],
    forward: list[str] | tuple[str, ...],
    extra: dict[str, str],
) -> dict[str, str]:
    """Variables the measure stage gets on the device.

    The same thread settings as the local subprocess transport's measure stage, the
    forwarded host variables that are set (QBENCH_PLUGINS by default: a plugin registered
    through it must be known where the cell runs too), a cache folder inside the per-cell
    folder (so the device's home stays clean), then the device file's own `env`.
    """
    env = dict.fromkeys(THREAD_VARS, str(cell.threads))
    env["QBENCH_CACHE_DIR"] = posixpath.join(remote_dir, "cache")
    for name in forward:
        if name in local_env:
            env[name] = local_env[name]
    env.update(extra)
    return env


def stage_script(
    remote_dir: str, argv: list[str], env: dict[str, str], timeout_s: float, name: str
) -> str:
    """POSIX sh that runs `argv` in remote_dir under `timeout`, with its pid kept for cleanup.

    stdout/stderr go to NAME.stdout/NAME.stderr in remote_dir; the script's exit status is
    the stage's (124 when `timeout` stopped it), and it prints it as EXIT_MARKER + status
    too, for channels that lose exit statuses (old adb). `env` is given as assignments
    before the command, so no `env` binary is needed.
    """
    q = shlex.quote
    d = q(remote_dir)
    assigns = " ".join(f"{k}={q(v)}" for k, v in env.items())
    limit = max(1, math.ceil(timeout_s))
    command = " ".join(q(a) for a in argv)
    return (
        f"cd {d} || exit {NO_WORKDIR_EXIT}\n"
        # Its own session, so its process group id is $!: cleanup kills the whole group even
        # where `timeout` does not make one (toybox, busybox).
        "if command -v setsid >/dev/null 2>&1; then S=setsid; else S=; fi\n"
        f"{assigns} $S timeout -s TERM -k {KILL_AFTER_S} {limit} {command} "
        f"</dev/null >{d}/{name}.stdout 2>{d}/{name}.stderr &\n"
        f"echo $! >{d}/{name}.pid\n"
        "wait $!\n"
        "rc=$?\n"
        f'echo "{EXIT_MARKER}$rc"\n'
        'exit "$rc"\n'
    )


def cleanup_script(remote_dir: str, names: tuple[str, ...] = ("measure",)) -> str:
    """Kill whatever a stage left running (its process group), then remove the folder."""
    d = shlex.quote(remote_dir)
    lines = []
    for name in names:
        pid = f"{d}/{name}.pid"
        lines.append(  # dash rejects `kill -KILL -- -PGID`; mksh and bash take both forms
            f"if [ -f {pid} ]; then p=$(cat {pid}); "
            'kill -KILL "-$p" 2>/dev/null || kill -s KILL -- "-$p" 2>/dev/null || '
            'kill -KILL "$p" 2>/dev/null; fi'
        )
    lines.append(f"rm -rf {d}")
    return "\n".join(lines) + "\n"


def exit_status(stdout: str, fallback: int) -> int:
    """The stage's exit status as the stage script printed it, else the channel's."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(EXIT_MARKER):
            try:
                return int(line[len(EXIT_MARKER) :].strip())
            except ValueError:
                break
    return fallback


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def describe_remote_exit(stage: str, code: int, stderr_tail: str, where: str) -> str:
    if code == NO_WORKDIR_EXIT:
        what = f"crashed: could not enter its folder on {where}"
    else:
        what = f"crashed on {where}: {describe_exit_code(code)}"
    tail = f"; last stderr line: {stderr_tail}" if stderr_tail else ""
    return f"{stage} {what}{tail}"


def timeout_result(stage: str, limit: float) -> dict[str, Any]:
    return {
        "status": "timeout",
        "error": f"{stage} exceeded the cell's time limit "
        f"({limit:.0f} s left of measurement.timeout_s) and was killed",
    }


def merge(prepared: dict[str, Any], measured: dict[str, Any], note: str) -> dict[str, Any]:
    """Like the subprocess transport: prepare's fields, then measure's, plus a provenance note."""
    merged = {**prepared, **measured}
    if measured.get("status") != "ok":
        merged["error"] = f"measure: {measured.get('error', '')}"
    merged["notes"] = [*(measured.get("notes") or []), note]
    return merged


def load_json_text(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def failed(error: str, **extra: Any) -> dict[str, Any]:
    """A stage result that failed with a one-line reason."""
    return {"status": "failed", "error": error, **extra}


def measure_argv(python: str, remote_dir: str) -> list[str]:
    """The agent's measure stage on the device, on the files copied to `remote_dir` (its
    working folder there: kept off the import path like locally, whatever the device's Python
    version)."""
    cell, out = posixpath.join(remote_dir, "cell.json"), posixpath.join(remote_dir, "measure.json")
    return agent_argv(python, "measure", cell, out)
