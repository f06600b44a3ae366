"""Faults injected for real: signals to `qbench run` and to its cells, a plugin's bad value, a
reader while a run writes, kill -9, a corrupt store file, --resume. No row measured is ever
lost or invented, no child outlives the run, no work folder is left behind.

The misbehaving cells come from tests/plugins/faulty.py (QBENCH_PLUGINS), whose `block` mode
writes the pids of its stage process and of a grandchild it starts, then waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_qbench, write_suite

PLUGINS = "tests.plugins.faulty"


def _suite(folder: Path, tiny_onnx: Path, backends: str, name: str = "faults") -> Path:
    return write_suite(
        folder,
        f"""
        name: {name}
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends: {backends}
        measurement: {{warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: 300}}
        accuracy: {{samples: 50}}
        power: off
        """,
    )


def _env(pids: Path | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), QBENCH_PLUGINS=PLUGINS)
    if pids is not None:
        env["QBENCH_TEST_PIDS"] = str(pids)
    else:
        env.pop("QBENCH_TEST_PIDS", None)
    return env


def _run_argv(suite: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qbench.cli", "run", str(suite), "--store", str(store),
            "--no-report", *extra]  # fmt: skip


def _default_sigint() -> None:
    # A job started in the background by a non-interactive shell (CI runners, nohup ... &)
    # inherits SIGINT ignored, and Python then keeps ignoring it; the run under test stands for
    # a foreground command at a terminal, whose Ctrl-C is delivered.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(suite: Path, store: Path, pids: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _run_argv(suite, store, "--quiet"),
        env=_env(pids),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    """Running (a zombie no init reaps counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _pids(folder: Path) -> tuple[int, int]:
    return int((folder / "stage.pid").read_text()), int((folder / "grandchild.pid").read_text())


def _workroots(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"qbench-work-{pid}-*"))


BLOCKING = (
    "[onnxruntime, {name: faulty, params: {mode: raise}}, {name: faulty, params: {mode: block}}]"
)


# Ctrl-C (9 s) with the slow tests: the default run is near its 15-minute budget
@pytest.mark.parametrize(
    ("sig", "code"),
    [pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow), (signal.SIGTERM, 143)],
)
def test_ctrl_c_or_sigterm_ends_the_cells_and_keeps_the_rows(
    tmp_path: Path, tiny_onnx: Path, sig: int, code: int
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    store = tmp_path / "store"
    proc = _start(_suite(tmp_path, tiny_onnx, BLOCKING), store, pids, tmp_path)
    _wait_for(lambda: (pids / "stage.pid").exists(), "the blocking cell to start")
    stage, grandchild = _pids(pids)
    assert _workroots(proc.pid)
    os.kill(proc.pid, sig)  # only qbench itself, as a terminal's Ctrl-C or a service manager
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "--resume" in err
    _wait_for(
        lambda: not _alive(stage) and not _alive(grandchild), "the cell's processes to end", 10
    )
    assert not _workroots(proc.pid)
    results = pd.read_parquet(store / "results")  # finalised: plain Parquet, no journal left
    assert not list((store / "journal").glob("*.jsonl"))
    assert sorted(results.status) == ["failed", "ok"]
    # stopped with a cell not measured: interrupted (as after kill -9), never finished
    from qbench.store.parquet import load

    runs, _ = load(store)
    assert list(runs.run_state) == ["interrupted"] and runs.finished_at.isna().all()


# slow: kill -9 and resume of a whole run (20 s)
@pytest.mark.slow
def test_kill_9_readers_resume(tmp_path: Path, tiny_onnx: Path) -> None:
    """kill -9 of qbench while a cell runs, after readers read the live store: the cell's
    processes die with it, every journalled row survives the readers, the next run sweeps the
    work folder, and --resume measures only the missing and failed cells into that run."""
    pids = tmp_path / "pids"
    pids.mkdir()
    store = tmp_path / "store"
    suite = _suite(tmp_path, tiny_onnx, BLOCKING)
    proc = _start(suite, store, pids, tmp_path)
    _wait_for(lambda: (pids / "stage.pid").exists(), "the blocking cell to start")
    stage, grandchild = _pids(pids)
    journal = next((store / "journal").glob("*.jsonl"))
    before = journal.read_bytes()
    assert before.count(b'"kind": "result"') == 2  # the ok and the failed cell

    # Readers while the run is live: they read it (in progress), and write nothing.
    report = run_qbench("report", str(store), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    assert "2 rows" in report.stdout
    assert "still running" in (tmp_path / "r.html").read_text()  # shown as in progress
    dash = run_qbench("dashboard", str(store), "-o", str(tmp_path / "d.html"))
    assert dash.returncode == 0, dash.stderr
    assert journal.read_bytes() == before
    assert not list((store / "results").glob("*.parquet"))

    proc.kill()  # kill -9 of qbench alone: nothing of it can clean up
    proc.communicate(timeout=30)
    _wait_for(
        lambda: not _alive(stage) and not _alive(grandchild), "the cell's processes to end", 10
    )
    assert _workroots(proc.pid)  # left behind by the kill ...

    # ... until the next run sweeps it; --resume continues the killed run.
    resumed = subprocess.run(
        _run_argv(suite, store, "--resume", "--json"),
        env=_env(None),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not _workroots(proc.pid)
    doc = json.loads(resumed.stdout)
    runs = pd.read_parquet(store / "runs")
    results = pd.read_parquet(store / "results")
    assert len(runs) == 1 and doc["run_id"] == runs.run_id.iloc[0]  # the same run, continued
    assert sorted(results.cell_id) == sorted(set(results.cell_id))  # no duplicate cell
    by_id = results.set_index("cell_id")
    first_rows = {json.loads(ln)["row"]["cell_id"]: json.loads(ln)["row"]
                  for ln in before.decode().splitlines() if '"kind": "result"' in ln}  # fmt: skip
    ok_id = "tiny/fp32/onnxruntime/local/b1/t1"
    # the measured cell was kept, not measured again: same samples as journalled before the kill
    assert list(by_id.loc[ok_id].latency_samples_ms) == first_rows[ok_id]["latency_samples_ms"]
    failed_id = "tiny/fp32/faulty[mode=raise]/local/b1/t1"
    assert by_id.loc[failed_id].status == "failed"  # measured again (it fails again)
    assert pd.Timestamp(by_id.loc[failed_id].started_at) > pd.Timestamp(
        first_rows[failed_id]["started_at"]
    )
    assert by_id.loc["tiny/fp32/faulty[mode=block]/local/b1/t1"].status == "ok"  # the missing one
    assert not list((store / "journal").glob("*.jsonl"))


def test_resume_refuses_a_changed_suite_and_a_finished_store_is_left_alone(
    tmp_path: Path, tiny_onnx: Path
) -> None:
    suite = _suite(tmp_path, tiny_onnx, '["null"]')
    store = tmp_path / "store"
    first = run_qbench("run", str(suite), "--store", str(store), "--no-report", "-q")
    assert first.returncode == 0, first.stderr
    again = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--resume")
    assert again.returncode == 0, again.stderr
    assert "1 cells kept" in again.stdout
    assert len(pd.read_parquet(store / "results")) == 1
    suite.write_text(suite.read_text().replace("samples: 50", "samples: 40"))
    changed = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--resume")
    assert changed.returncode == 2
    assert "suite changed" in changed.stderr and "Traceback" not in changed.stderr


def test_bad_plugin_value_and_real_time_signal_fail_only_their_cells(
    tmp_path: Path, tiny_onnx: Path
) -> None:
    suite = _suite(
        tmp_path,
        tiny_onnx,
        "[onnxruntime, {name: faulty, params: {mode: [bad_row, rt_signal]}}]",
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json",
                      plugins=PLUGINS)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"ok": 1, "failed": 2, "timeout": 0, "skipped": 0}
    by_id = pd.read_parquet(store / "results").set_index("cell_id")
    bad = by_id.loc["tiny/fp32/faulty[mode=bad_row]/local/b1/t1"]
    assert bad.status == "failed"
    assert "quantized_nodes" in bad.error and "'many'" in bad.error
    rt = by_id.loc["tiny/fp32/faulty[mode=rt_signal]/local/b1/t1"]
    assert rt.status == "failed"
    assert "SIGRTMIN+3" in rt.error
    assert by_id.loc["tiny/fp32/onnxruntime/local/b1/t1"].status == "ok"


def test_a_corrupt_store_file_is_skipped_with_one_warning(tmp_path: Path, tiny_onnx: Path) -> None:
    store = tmp_path / "store"
    proc = run_qbench("run", str(_suite(tmp_path, tiny_onnx, '["null"]')), "--store", str(store),
                      "--no-report", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (store / "results" / "garbage.parquet").write_bytes(b"PAR1 this is not parquet \x00\xff")
    (store / "journal").mkdir(exist_ok=True)
    (store / "journal" / "broken.jsonl").write_bytes(b'{"kind": "run", \xff\xfe\x00garbage\n')
    out = run_qbench("report", str(store), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and "1 rows" in out.stdout
    warnings = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in out.stderr
    assert any("garbage.parquet" in ln for ln in warnings), warnings
    assert all(ln.startswith("qbench: warning: ") for ln in warnings), warnings


def test_suite_name_cannot_place_the_report_outside_reports(tmp_path: Path) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    suite = write_suite(
        work,
        """
        name: ../../escaped
        models: [digits_cnn]
        backends: ["null"]
        measurement: {warmup: 1, min_iters: 3, min_seconds: 0.01}
        accuracy: {samples: 20}
        power: off
        """,
    )
    proc = run_qbench("run", str(suite), "--store", "store", "-q", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "reports" / "escaped.html").is_file()
    assert not (tmp_path / "escaped.html").exists()
    assert not list(tmp_path.glob("**/escaped.html"))[1:]


def _one_cell(tmp_path: Path, backend: str, power: str = "off") -> tuple[Path, dict[str, str]]:
    """A folder holding cell.json of digits_cnn fp32 on `backend`, and the agent's env."""
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    suite = write_suite(
        tmp_path,
        f"""
        name: one
        models: [digits_cnn]
        backends: [{backend}]
        measurement: {{warmup: 1, min_iters: 3, min_seconds: 0.01}}
        accuracy: {{samples: 20}}
        power: {power}
        """,
    )
    (cell,) = build_plan(*load_suite(suite)).runnable
    work = tmp_path / "cell"
    work.mkdir()
    (work / "cell.json").write_text(json.dumps(cell.to_json()))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("QBENCH_PLUGINS", None)
    return work, env


def _stage(work: Path, env: dict[str, str], name: str) -> dict[str, object]:
    """Run one agent stage on the folder's cell; its JSON result (prepare's is what measure
    reads as prepared.json)."""
    out = work / ("prepared.json" if name == "prepare" else f"{name}.json")
    subprocess.run([sys.executable, "-m", "qbench.agent", name, str(work / "cell.json"),
                    str(out)], env=env, timeout=600, check=False)  # fmt: skip
    return json.loads(out.read_text())


def test_litert_measure_process_holds_no_other_runtime(tmp_path: Path) -> None:
    """The measure stage imports the cell's own backend and method only: a LiteRT cell's
    process has no ONNX Runtime and no torch in it (their memory is not the cell's), also
    where it looks for a power meter (`power: measure`, the default)."""
    from qbench.plugins import load_all

    if load_all().backends.get("litert")().unavailable():
        pytest.skip("LiteRT is not installed")
    work, env = _one_cell(tmp_path, "litert", "measure")
    assert _stage(work, env, "prepare")["status"] == "ok"
    probe = (
        "import json, sys\n"
        "from qbench import agent\n"
        f"code = agent.main(['measure', {str(work / 'cell.json')!r}, {str(work / 'm.json')!r}])\n"
        "tops = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(tops & {'onnxruntime', 'onnx', 'torch'})\n"
        "backends = sorted(m for m in sys.modules if m.startswith('qbench.backends.') and\n"
        "                  not m.rsplit('.', 1)[1].startswith('_') and not m.endswith('.base'))\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'backends': backends}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    measured = json.loads((work / "m.json").read_text())
    assert result["code"] == 0 and measured["status"] == "ok", measured.get("error")
    assert measured["peak_rss_mb"] > 0
    assert result["heavy"] == [], result
    assert result["backends"] == ["qbench.backends.litert"], result
    # it looked for a meter: a figure from one, or why there is none
    assert measured.get("power_source") or measured.get("power_note"), measured


def test_a_cached_file_changed_between_prepare_and_measure_is_refused(tmp_path: Path) -> None:
    work, env = _one_cell(tmp_path, "onnxruntime")
    prepared = _stage(work, env, "prepare")
    assert prepared["status"] == "ok"
    eval_path = Path(str(prepared["eval_path"]))
    original = eval_path.read_bytes()  # a shared cache entry: put back afterwards
    data = bytearray(original)
    data[-20] ^= 0xFF
    os.chmod(eval_path, 0o644)
    eval_path.write_bytes(bytes(data))
    try:
        measured = _stage(work, env, "measure")
    finally:
        eval_path.write_bytes(original)
    assert measured["status"] == "failed"
    assert "sha256" in str(measured["error"]) and eval_path.name in str(measured["error"])


def test_power_off_unquoted_means_off(tmp_path: Path) -> None:
    from qbench.suite.loader import load_suite

    suite, _ = load_suite(write_suite(tmp_path, "name: p\nmodels: [digits_cnn]\npower: off\n"))
    assert suite.power.mode == "off"
    suite, _ = load_suite(
        write_suite(tmp_path, "name: p\nmodels: [digits_cnn]\npower: {mode: off}\n")
    )
    assert suite.power.mode == "off"


def test_an_interrupt_while_waiting_kills_a_child_in_its_own_session() -> None:
    """Every transport waits through wait_or_kill: a Ctrl-C (here from a timer) while it waits
    kills the child's group, which the terminal's signal would never reach."""
    from qbench.transports.subprocess import wait_or_kill

    child = subprocess.Popen(["sleep", "60"], start_new_session=True)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            wait_or_kill(child, 30)  # type: ignore[arg-type]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert child.returncode == -signal.SIGKILL


def test_exit_codes_are_described_whatever_the_signal() -> None:
    from qbench.transports._remote import describe_remote_exit
    from qbench.transports.subprocess import describe_exit_code

    assert describe_exit_code(-signal.SIGKILL) == "killed by SIGKILL"
    rt = int(signal.SIGRTMIN) + 3
    assert describe_exit_code(-rt) == f"killed by real-time signal SIGRTMIN+3 ({rt})"
    assert describe_exit_code(2) == "exit code 2"
    assert describe_remote_exit("measure", 137, "", "pi@board") == (
        "measure crashed on pi@board: exit code 137 (a shell's code for SIGKILL)"
    )


def test_a_failed_cell_keeps_its_traceback_in_the_store_console_and_report(
    tmp_path: Path, tiny_onnx: Path
) -> None:
    """Issue 28: a failed cell's traceback reached neither the console nor the store. A stage
    that raises keeps its traceback's last lines; a stage that crashes keeps its stderr's."""
    suite = _suite(tmp_path, tiny_onnx, "[{name: faulty, params: {mode: [raise, crash]}}]",
                   name="tracebacks")  # fmt: skip
    store, report = tmp_path / "store", tmp_path / "report.html"
    proc = run_qbench("run", str(suite), "--store", str(store), "--report", str(report),
                      plugins=PLUGINS)  # fmt: skip
    by_id = pd.read_parquet(store / "results").set_index("cell_id")
    raised = by_id.loc["tiny/fp32/faulty[mode=raise]/local/b1/t1"]
    assert raised.status == "failed"
    trace = raised.error_traceback
    assert 3 <= len(trace.splitlines()) <= 20
    assert not any(set(line.strip()) <= set("^~") for line in trace.splitlines())
    assert "faulty.py" in trace and trace.splitlines()[-1] == (
        "RuntimeError: faulty backend raised on purpose"
    )
    crashed = by_id.loc["tiny/fp32/faulty[mode=crash]/local/b1/t1"]
    assert crashed.status == "failed" and "SIGABRT" in crashed.error
    # no Python traceback: the row keeps what the crashed stage wrote to stderr
    assert "faulty: native code gave up" in crashed.error_traceback
    assert "native code gave up" in crashed.error  # its last stderr line, as before
    # the console shows the last frames under the error line
    assert "RuntimeError: faulty backend raised on purpose" in proc.stdout
    assert "faulty.py" in proc.stdout
    html = report.read_text()
    assert '<pre class="traceback">' in html and "faulty backend raised on purpose" in html
