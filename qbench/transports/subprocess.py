"""Local child processes: a fresh Python process per stage, with a timeout.

The parent blocks on a pidfd (no polling loop), so it takes no CPU from the core being
measured. Thread settings reach the runtime through its own API and the usual environment
variables, set before the child imports anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.params import CheckError, Params
from qbench.plan import Cell
from qbench.plugins import transports
from qbench.transports.base import Transport, traceback_tail

# The agent's parent (this process): the agent ends its process group when that parent is gone.
PARENT_PID_VAR = "QBENCH_PARENT_PID"

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


# How every transport starts qbench's agent: `python -c AGENT_BOOTSTRAP STAGE CELL OUT`, not
# `python -m qbench.agent`. `-m` (like a script) puts the working folder first on sys.path, so a
# json.py in the folder qbench was started from ran inside every cell. `-c` puts "" (that same
# folder) there instead, which the bootstrap removes before it imports anything; runpy then
# runs the agent exactly as `-m` would. Not `-P` or `-I`: a device's Python may predate 3.11
# (`-P`), and `-I` also drops PYTHONPATH, through which plugins and a checkout that is not
# installed are found. Under PYTHONSAFEPATH nothing is prepended and nothing is removed.
AGENT_BOOTSTRAP = (
    'import sys; sys.path[:1] = [p for p in sys.path[:1] if p != ""]; '
    'import runpy; runpy.run_module("qbench.agent", run_name="__main__", alter_sys=True)'
)


def agent_argv(python: str, *args: str) -> list[str]:
    """The command line running qbench's agent with `args` (stage, cell.json, result file),
    the working folder kept off its import path (see AGENT_BOOTSTRAP)."""
    return [python, "-c", AGENT_BOOTSTRAP, *args]


class SubprocessParams(Params):
    python: str = Field(default=sys.executable, description="interpreter that runs the agent")


def wait_blocking(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for `proc` up to `timeout` seconds without polling. True if it exited."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux ≥ 5.3: Popen.wait's own sleeping loop
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    finally:
        os.close(fd)
    if ready:
        proc.wait()
        return True
    return False


def _describe_exit(code: int, stderr_path: Path) -> str:
    tail = ""
    if stderr_path.exists():
        lines = [ln for ln in stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1].strip() if lines else ""
    what = f"crashed: {describe_exit_code(code)}"
    return f"{what}; last stderr line: {tail}" if tail else what


def describe_exit_code(code: int) -> str:
    """Any exit status in words: a named signal, a real-time signal (which `signal.Signals`
    does not name), or an exit code (a shell's 128+N for a signal says so too)."""
    if code < 0:
        return f"killed by {signal_name(-code)}"
    if code > 128 and code - 128 < 65:
        return f"exit code {code} (a shell's code for {signal_name(code - 128)})"
    return f"exit code {code}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        low, high = signal.SIGRTMIN, signal.SIGRTMAX
        if low <= number <= high:
            return f"real-time signal SIGRTMIN+{number - low} ({number})"
        return f"signal {number}"


def run_stage(
    python: str, stage: str, workdir: Path, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    out = workdir / f"{stage}.json"
    out.unlink(missing_ok=True)
    stderr_path = workdir / f"{stage}.stderr"
    with open(workdir / f"{stage}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            agent_argv(python, stage, str(workdir / "cell.json"), str(out)),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            # the agent dies with this process even after a kill -9 (qbench.agent: parent watch)
            env={**env, PARENT_PID_VAR: str(os.getpid())},
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        if not wait_or_kill(proc, timeout):
            return {
                "status": "timeout",
                "error": f"{stage} exceeded the cell's time limit "
                f"({timeout:.0f} s left of measurement.timeout_s) and was killed",
            }
    if out.exists():
        return json.loads(out.read_text())
    # no result file: the stage crashed (a signal, a native abort); its stderr is the trace
    stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    return {"status": "failed", "error": f"{stage} {_describe_exit(proc.returncode, stderr_path)}",
            "traceback": traceback_tail(stderr)}  # fmt: skip


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child's whole process group (it leads its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """wait_blocking for a child started in its own session (a stage, an ssh or adb client):
    True if it exited; past `timeout` its group is killed (False). A Ctrl-C or SIGTERM of
    qbench while waiting kills the group too, then goes on up: a child in its own session
    never gets the terminal's signal, so without this it would outlive qbench."""
    try:
        exited = wait_blocking(proc, timeout)
    except BaseException:
        kill_group(proc)
        raise
    if not exited:
        kill_group(proc)
    return exited


@transports.register
class SubprocessTransport(Transport):
    name = "subprocess"
    description = "fresh local Python process per stage, with a timeout"
    Params = SubprocessParams

    def check(self, params: Params) -> None:
        """The interpreter exists and can be run (checked at plan time, without running it)."""
        assert isinstance(params, SubprocessParams)
        found = shutil.which(params.python)
        if found is None:
            what = "no such file" if not os.path.exists(params.python) else "not executable"
            raise CheckError("python", f"{params.python}: {what}; expected a Python interpreter "
                             "with qbench installed")  # fmt: skip

    def run_cell(self, cell: Cell, workdir: Path, params: Params) -> dict[str, Any]:
        assert isinstance(params, SubprocessParams)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cell.json").write_text(json.dumps(cell.to_json()))
        deadline = time.monotonic() + cell.measurement["timeout_s"]
        env = dict(os.environ)
        # Building artifacts may use every core; measuring uses exactly the cell's threads.
        env.update(dict.fromkeys(THREAD_VARS, str(os.cpu_count() or 1)))
        prepared = run_stage(params.python, "prepare", workdir, env, deadline - time.monotonic())
        if prepared.get("status") != "ok":
            return {**prepared, "error": f"prepare: {prepared.get('error', '')}"}
        (workdir / "prepared.json").write_text(json.dumps(prepared))
        env.update(dict.fromkeys(THREAD_VARS, str(cell.threads)))
        measured = run_stage(params.python, "measure", workdir, env, deadline - time.monotonic())
        merged = {**prepared, **measured}
        if measured.get("status") != "ok":
            merged["error"] = f"measure: {measured.get('error', '')}"
        return merged
