"""Every mistake in a suite or device file is one line naming file, line and field; exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbench.plan import build_plan
from qbench.suite.loader import SuiteError, load_suite
from tests.conftest import REPO, run_qbench, write_suite

GOOD_HEAD = "name: t\nmodels: [digits_cnn]\n"

# (suite text, expected line, expected field, words the message must contain)
CASES = [
    ("name: t\nmodels: [digits_cnn\n", 3, "", "invalid YAML"),
    ("- just\n- a list\n", 1, "", "expected a mapping"),
    ("", 1, "", "empty file"),
    ("name: t\n", 1, "models", "required field is missing"),
    (GOOD_HEAD + "colour: blue\n", 3, "colour", "unknown field"),
    (GOOD_HEAD + "scenario:\n  batch: one\n", 4, "scenario.batch", "got 'one'"),
    (GOOD_HEAD + "scenario:\n  threads: [1, 0]\n", 4, "scenario.threads", "positive integer"),
    (GOOD_HEAD + "measurement:\n  warmup: -1\n", 4, "measurement.warmup", "greater than or equal"),
    (GOOD_HEAD + "methods:\n  - fp32\n  - int9\n", 5, "methods[1]", "unknown method 'int9'"),
    (
        GOOD_HEAD + "methods:\n  - name: static_int8\n    params:\n      calibrator: vibes\n",
        6,
        "methods[0].params.calibrator",
        "'minmax', 'entropy', 'percentile' or 'mse'",
    ),
    (
        GOOD_HEAD + "methods:\n  - name: static_int8\n    params: {bits: 4}\n",
        5,
        "methods[0].params.bits",
        "unknown field",
    ),
    (
        GOOD_HEAD + "backends: [onnxruntime, tensorflow]\n",
        3,
        "backends[1]",
        "unknown backend 'tensorflow'",
    ),
    (GOOD_HEAD + "devices: [toaster]\n", 3, "devices[0]", "no device file for 'toaster'"),
    (GOOD_HEAD + "exclude:\n  - {}\n", 4, "exclude[0]", "at least one of"),
    (GOOD_HEAD + "accuracy: {dataset: mnist}\n", 3, "accuracy.dataset", "unknown dataset"),
    (
        "name: t\nmodels:\n  - name: digits_cnn\n    params: {epochs: zero}\n",
        4,
        "models[0].params.epochs",
        "valid integer",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "words"), CASES)
def test_invalid_suite_is_one_located_line(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as info:
        suite, source = load_suite(path)
        build_plan(suite, source)
    err = info.value
    assert err.line == line, str(err)
    assert err.field == field, str(err)
    assert words in str(err)
    assert "\n" not in str(err)
    assert str(err).startswith(f"{path}:{line}: ")


def test_invalid_device_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "devices").mkdir()
    device = tmp_path / "devices" / "board.yaml"
    device.write_text("name: board\nkind: fpga\n")
    suite = write_suite(tmp_path, GOOD_HEAD + "devices: [board]\n")
    with pytest.raises(SuiteError) as info:
        build_plan(*load_suite(suite))
    assert str(info.value).startswith(f"{device}:2: kind: ")
    assert "'cpu', 'gpu', 'npu' or 'tpu'" in str(info.value)


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[9], CASES[12]])
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, case: tuple[str, int, str, str]) -> None:
    path = write_suite(tmp_path, case[0], "bad.yaml")
    proc = run_qbench("run", str(path), "--store", str(tmp_path / "store"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith(f"qbench: error: {path}:{case[1]}: ")
    assert not (tmp_path / "store").exists()  # nothing was run


def test_missing_suite_file(tmp_path: Path) -> None:
    proc = run_qbench("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"qbench: error: {tmp_path / 'nope.yaml'}: cannot read the "
        "file (No such file or directory)"
    )


def your_model_layout(folder: Path, request: pytest.FixtureRequest) -> Path:
    """suites/your_model.yaml beside the example files `examples/make_examples.py` writes,
    laid out as in the repository (the suite names them relative to its own folder). The
    files are made once per test session (example_files) and copied."""
    import shutil

    examples: Path = request.getfixturevalue("example_files")
    (folder / "suites").mkdir()
    shutil.copytree(examples, folder / "examples")
    return Path(shutil.copy(REPO / "suites" / "your_model.yaml", folder / "suites"))


# your_model.yaml's plan loads a user's model (16 s): with the slow tests (default-run budget)
@pytest.mark.parametrize(
    "suite",
    [pytest.param(p, marks=pytest.mark.slow) if p.name == "your_model.yaml" else p
     for p in sorted((REPO / "suites").glob("*.yaml"))],
    ids=lambda p: p.name,
)  # fmt: skip
def test_shipped_suites_plan(suite: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every suite in suites/ loads and plans (the nightly job and README name them)."""
    if suite.name == "your_model.yaml":  # its model files are made by examples/make_examples.py
        suite = your_model_layout(tmp_path, request)
    proc = run_qbench("run", str(suite), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert " to run, " in proc.stdout
