"""Hardening against what the working folder and the store may hold (issue 29, "Security"):
real `qbench` processes on real files, nothing of what is checked is mocked.

* Code in the folder qbench is started from never runs inside a cell: the agent's stages do
  not put that folder on their import path, locally or on a device (Ray's workers:
  tests/test_ray_executor.py).
* Names read from a store (run ids in journals and Parquet files) are checked before they
  become file names: a crafted one is refused in one line, and nothing is written outside
  the store; cell ids become one file name inside the export folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qbench.transports import _remote
from tests.conftest import REPO

# Modules named like the standard library's that qbench's agent imports (json at once, runpy
# in its bootstrap): if Python looked in the working folder first, these would run instead.
SHADOWS = ("json", "runpy")


def plant_shadow_modules(folder: Path, marker: Path, names: tuple[str, ...] = SHADOWS) -> None:
    """Modules named `names` in `folder` that record, in `marker`, every process importing
    them."""
    for name in names:
        (folder / f"{name}.py").write_text(
            "import sys\n"
            f"with open({str(marker)!r}, 'a') as fh:\n"
            f"    fh.write({name!r} + ' imported by ' + ' '.join(sys.argv) + '\\n')\n"
        )


def qbench_as_installed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`qbench ARGS` started as its console script starts it: the script's own folder, not
    the working folder, first on sys.path (`-P`), so only what qbench itself starts can pick
    up the planted modules. (tests.conftest.run_qbench's `python -m` would import them in the
    CLI process itself.)"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.pop("QBENCH_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-P", "-m", "qbench.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_code_in_the_working_folder_never_runs_in_a_cell(tmp_path: Path, tiny_onnx: Path) -> None:
    """A json.py in the folder `qbench run` starts in: prepare and measure import the
    standard library's json, and the cell is ok."""
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "imported"
    plant_shadow_modules(work, marker)
    store = tmp_path / "store"
    proc = qbench_as_installed(
        "run", "--model", str(tiny_onnx), "--data", "synthetic", "--methods", "fp32",
        "--backends", "onnxruntime", "--store", str(store), "--no-report", "--no-confirm",
        "--json", cwd=work,
    )  # fmt: skip
    assert not marker.exists(), marker.read_text()
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["status"] for r in rows] == ["ok"], rows


def test_the_device_stage_keeps_its_folder_off_the_import_path(tmp_path: Path) -> None:
    """The command the ssh and adb transports run on a device, run here by sh in a folder
    holding json.py: the agent starts without importing it (and reads the missing cell.json
    with the real json). The same folder under `python -m qbench.agent` does import it: the
    check would see the old command line."""
    remote = tmp_path / "qbench-0123"
    remote.mkdir()
    marker = tmp_path / "imported"
    plant_shadow_modules(remote, marker)
    env = {"PYTHONPATH": str(REPO), "QBENCH_CACHE_DIR": str(tmp_path / "cache")}

    def stage(argv: list[str]) -> str:
        script = _remote.stage_script(str(remote), argv, env, 60, "measure")
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=90)
        assert _remote.EXIT_MARKER in done.stdout, done.stderr
        return (remote / "measure.stderr").read_text()

    stderr = stage(_remote.measure_argv(sys.executable, str(remote)))
    assert not marker.exists(), marker.read_text()
    assert "cell.json" in stderr  # the agent itself ran, and failed on the absent cell
    stage([sys.executable, "-m", "qbench.agent", "measure", "cell.json", "measure.json"])
    assert "json imported by" in marker.read_text()


# A journal as a crafted store would hold it: a well-formed run entry whose run id climbs out
# of the store (qbench used to write STORE/../escaped_run.parquet from it).
ESCAPING = "../../escaped_run"
JOURNAL = "20261208T002440Z-6b3f3d.jsonl"
CRAFTED = (
    json.dumps(
        {
            "kind": "run",
            "row": {"run_id": ESCAPING, "suite": "t", "started_at": "2026-12-08T00:24:40+00:00"},
        }
    )
    + "\n"
)
SUITE = 'name: t\nmodels: [digits_cnn]\nbackends: ["null"]\npower: "off"\n'


def _files(root: Path) -> set[Path]:
    """Every file under `root` (a refused run may have made the store's empty folders)."""
    return {p.relative_to(root) for p in root.rglob("*") if not p.is_dir()}


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr, naming `words`."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("qbench: error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_a_run_id_that_leaves_the_store_is_refused(tmp_path: Path) -> None:
    """`qbench run` (which finalises abandoned journals), `qbench run --resume` (which reopens
    the run a reader found) and `qbench report` each stop in one line naming the journal and
    the run id, and write nothing outside the store."""
    (tmp_path / "s.yaml").write_text(SUITE)
    journal = tmp_path / "store" / "journal" / JOURNAL
    journal.parent.mkdir(parents=True)
    journal.write_text(CRAFTED)
    before = _files(tmp_path)
    for argv in (
        ["run", "s.yaml", "--store", "store", "--no-report", "--no-confirm", "-q"],
        ["run", "s.yaml", "--store", "store", "--resume", "--no-report", "--no-confirm", "-q"],
        ["report", "store", "-o", "r.html"],
    ):
        proc = qbench_as_installed(*argv, cwd=tmp_path)
        _refused(proc, f"store/journal/{JOURNAL}", repr(ESCAPING))
        assert _files(tmp_path) == before, argv  # nothing written, inside the store or out
    assert journal.read_text() == CRAFTED


def test_run_ids_of_parquet_files_and_mismatched_journals_are_refused(tmp_path: Path) -> None:
    """The run ids of the runs/ Parquet files are what `--resume` reopens: checked as they
    are read. A journal holding another (well-formed) run's id would overwrite that run's
    files when finalised: refused too."""
    import pandas as pd

    store = tmp_path / "store"
    (store / "runs").mkdir(parents=True)
    pd.DataFrame({"run_id": [ESCAPING], "suite": ["t"]}).to_parquet(store / "runs" / "x.parquet")
    proc = qbench_as_installed("report", "store", "-o", "r.html", cwd=tmp_path)
    _refused(proc, "store/runs/x.parquet", repr(ESCAPING))

    (store / "runs" / "x.parquet").unlink()
    (store / "journal").mkdir()
    other = CRAFTED.replace(ESCAPING, "20250101T000000Z-aaaaaa")
    (store / "journal" / JOURNAL).write_text(other)
    (tmp_path / "s.yaml").write_text(SUITE)
    proc = qbench_as_installed(
        "run", "s.yaml", "--store", "store", "--no-report", "-q", cwd=tmp_path
    )
    _refused(proc, f"store/journal/{JOURNAL}", "'20250101T000000Z-aaaaaa'", "does not match")
    assert not (store / "results").exists() or not list((store / "results").iterdir())


def test_cell_ids_from_a_store_become_one_file_inside_the_export_folder(tmp_path: Path) -> None:
    """`qbench export RUN` names each artifact after its cell id, read from the store."""
    from qbench.artifact_export import safe_name

    for cell_id in ("..", "../../escaped", "", "/etc/passwd", ".hidden", "m/fp32/ort/local/b1/t1"):
        name = safe_name(cell_id)
        assert name and not name.startswith(".") and "/" not in name, (cell_id, name)
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
