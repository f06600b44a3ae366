"""Local child processes: a fresh Python process per stage, with a timeout.

The parent blocks on a pidfd (no polling loop), so it takes no CPU from the core being
measured. Thread settings reach the runtime through its own API and the usual environment
variables, set before the child imports anything.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.params import Params
from qbench.plan import Cell
from qbench.plugins import transports
from qbench.transports.base import Transport

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


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
    if code < 0:
        what = f"crashed: killed by {signal.Signals(-code).name}"
    else:
        what = f"crashed: exit code {code}"
    return f"{what}; last stderr line: {tail}" if tail else what


def run_stage(
    python: str, stage: str, workdir: Path, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    out = workdir / f"{stage}.json"
    out.unlink(missing_ok=True)
    stderr_path = workdir / f"{stage}.stderr"
    with open(workdir / f"{stage}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [python, "-m", "qbench.agent", stage, str(workdir / "cell.json"), str(out)],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        if not wait_blocking(proc, timeout):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {
                "status": "timeout",
                "error": f"{stage} exceeded the cell's time limit "
                f"({timeout:.0f} s left of measurement.timeout_s) and was killed",
            }
    if out.exists():
        return json.loads(out.read_text())
    return {"status": "failed", "error": f"{stage} {_describe_exit(proc.returncode, stderr_path)}"}


@transports.register
class SubprocessTransport(Transport):
    name = "subprocess"
    description = "fresh local Python process per stage, with a timeout"
    Params = SubprocessParams

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
