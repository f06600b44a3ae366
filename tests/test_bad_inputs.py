# ruff: noqa: E501  (the corpus is a table: one case per line reads best)
"""A corpus of broken suites, device files and command lines: each one is refused before
anything runs with exit code 2 and ONE line on stderr that names the file (or flag) at fault,
never a traceback.

Each case is (id, files, argv, env, words): `files` are written into a fresh folder (text, or
bytes for binary files), `argv` is the qbench command line run there ({d} is that folder),
`env` extra environment, `words` what the one line must contain.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

HEAD = "name: t\nmodels: [digits_cnn]\n"
SSH = "name: board\nkind: cpu\ntransport:\n  name: ssh\n  params:\n"
LOCAL_DEVICE = "name: here\nkind: cpu\ntransport: subprocess\n"


def _suite(body: str, device: str | None = None) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {"s.yaml": HEAD + body}
    if device is not None:
        files["devices/board.yaml"] = device
        files["s.yaml"] = HEAD + body + "devices: [board]\n"
    return files


def _device(text: str) -> dict[str, str | bytes]:
    return _suite("", text)


RUN = ["run", "s.yaml", "--dry-run"]
CASES: list[tuple[str, dict[str, str | bytes], list[str], dict[str, str], list[str]]] = [
    # --- numbers without a sane bound
    ("timeout-inf", _suite("measurement: {timeout_s: .inf}\n"), RUN, {}, ["s.yaml:3", "timeout_s"]),
    ("timeout-1e300", _suite("measurement: {timeout_s: 1e300}\n"), RUN, {}, ["s.yaml:3", "timeout_s"]),
    ("timeout-nan", _suite("measurement: {timeout_s: .nan}\n"), RUN, {}, ["s.yaml:3", "timeout_s"]),
    ("min-seconds-inf", _suite("measurement: {min_seconds: .inf}\n"), RUN, {}, ["s.yaml:3", "min_seconds"]),
    ("warmup-huge", _suite("measurement: {warmup: 1000000000000}\n"), RUN, {}, ["s.yaml:3", "warmup"]),
    ("max-iters-huge", _suite("measurement: {max_iters: 100000000000000}\n"), RUN, {}, ["s.yaml:3", "max_iters"]),
    ("repeats-huge", _suite("measurement: {repeats: 1000000000}\n"), RUN, {}, ["s.yaml:3", "repeats"]),
    ("threads-huge", _suite("scenario: {threads: 1000000}\n"), RUN, {}, ["s.yaml:3", "scenario.threads"]),
    ("batch-huge", _suite("scenario: {batch: [1, 1000000000]}\n"), RUN, {}, ["s.yaml:3", "scenario.batch"]),
    ("accuracy-samples-huge", _suite("accuracy: {samples: 10000000000}\n"), RUN, {}, ["s.yaml:3", "accuracy.samples"]),
    ("calibration-samples-huge", _suite("calibration: {samples: 10000000000}\n"), RUN, {}, ["s.yaml:3", "calibration.samples"]),
    ("idle-inf", _suite("power: {mode: measure, idle_s: .inf}\n"), RUN, {}, ["s.yaml:3", "power.idle_s"]),
    # --- names that become file names
    ("name-too-long", {"s.yaml": "name: " + "x" * 300 + "\nmodels: [digits_cnn]\n"}, RUN, {}, ["s.yaml:1", "name"]),
    ("name-empty", {"s.yaml": "name: ''\nmodels: [digits_cnn]\n"}, RUN, {}, ["s.yaml:1", "name"]),
    ("name-newline", {"s.yaml": 'name: "a\\nb"\nmodels: [digits_cnn]\n'}, RUN, {}, ["s.yaml:1", "name"]),
    # --- files that are not YAML text
    ("binary-suite", {"s.yaml": b"\xff\xfe\x00\x01\x89PNG\r\n\x1a\n\x00\x00"}, RUN, {}, ["s.yaml"]),
    ("nul-in-suite", {"s.yaml": "name: t\x00\nmodels: [digits_cnn]\n"}, RUN, {}, ["s.yaml"]),
    ("binary-device", _device(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), RUN, {}, ["board.yaml"]),  # type: ignore[arg-type]
    ("suite-is-folder", {"s.yaml/x": "x"}, RUN, {}, ["s.yaml"]),
    ("suite-missing", {}, RUN, {}, ["s.yaml"]),
    ("suite-tabs", {"s.yaml": "name: t\nmodels:\n\t- digits_cnn\n"}, RUN, {}, ["s.yaml:3"]),
    # --- duplicate keys: both lines named
    ("duplicate-key", {"s.yaml": HEAD + "name: u\n"}, RUN, {}, ["s.yaml:3", "name", "line 1"]),
    ("duplicate-nested-key", _suite("measurement:\n  warmup: 1\n  warmup: 2\n"), RUN, {}, ["s.yaml:5", "warmup", "line 4"]),
    ("duplicate-device-key", _device(LOCAL_DEVICE + "kind: gpu\n"), RUN, {}, ["board.yaml:4", "kind", "line 2"]),
    # --- YAML 1.1 booleans where a word was meant
    ("power-number", _suite("power: 3\n"), RUN, {}, ["s.yaml:3", "power"]),
    ("backend-off", _suite("backends: [off]\n"), RUN, {}, ["s.yaml:3", "backends[0]"]),
    # --- parameters: unknown names and products checked before expansion
    ("product-unknown-param", _suite("methods:\n  - name: static_int8\n    params:\n      no_such: [" + ", ".join(map(str, range(100))) + "]\n      calibrator: [minmax, entropy, percentile, mse]\n"), RUN, {}, ["s.yaml:6", "no_such", "unknown field"]),
    ("product-too-large", _suite("methods:\n  - name: static_int8\n    params:\n" + "".join(f"      {k}: [{', '.join(str(v) for v in range(1, 101))}]\n" for k in ("histogram_bins", "entropy_quantized_bins", "equalize_max_scale", "percentile"))), RUN, {}, ["s.yaml:6", "methods[0].params", "100000000 cells"]),
    ("model-product-unknown", {"s.yaml": "name: t\nmodels:\n  - name: digits_cnn\n    params: {nope: [1, 2, 3]}\n"}, RUN, {}, ["s.yaml:4", "nope"]),
    ("matrix-too-large", _suite("scenario:\n  batch: [" + ", ".join(map(str, range(1, 401))) + "]\n  threads: [" + ", ".join(map(str, range(1, 401))) + "]\n"), RUN, {}, ["s.yaml", "cells"]),
    # --- transports checked at plan time
    ("ssh-host-option", _device(SSH + "    host: -oProxyCommand=touch /tmp/qbench-pwned\n"), RUN, {}, ["board.yaml", "host"]),
    ("ssh-user-option", _device(SSH + "    host: box\n    user: -oProxyCommand=x\n"), RUN, {}, ["board.yaml", "user"]),
    ("ssh-port-text", _device(SSH + "    host: box\n    port: twenty\n"), RUN, {}, ["board.yaml", "port"]),
    ("ssh-no-host", _device(SSH + "    user: me\n"), RUN, {}, ["board.yaml", "host"]),
    ("ssh-unknown-param", _device(SSH + "    host: box\n    hostname: box\n"), RUN, {}, ["board.yaml", "hostname"]),
    ("subprocess-python-missing", _device("name: board\ntransport:\n  name: subprocess\n  params: {python: /no/such/python3}\n"), RUN, {}, ["board.yaml", "python"]),
    ("device-unknown", _suite("devices: [toaster]\n"), RUN, {}, ["s.yaml:3", "devices[0]", "toaster"]),
    ("device-kind", _device("name: board\nkind: fpga\n"), RUN, {}, ["board.yaml:2", "kind"]),
    # --- command line
    ("run-store-is-file", {**_suite(""), "store": "not a folder"}, ["run", "s.yaml", "--store", "store"], {}, ["--store", "store"]),
    ("run-output-is-file", {**_suite("output: store\n"), "store": "x"}, ["run", "s.yaml"], {}, ["store"]),
    ("run-report-is-folder", {**_suite(""), "r.html/x": "x"}, ["run", "s.yaml", "--report", "r.html"], {}, ["--report", "r.html"]),
    ("run-report-under-file", {**_suite(""), "f": "x"}, ["run", "s.yaml", "--report", "f/r.html"], {}, ["--report", "f/r.html"]),
    ("report-o-folder", {"out/x": "x"}, ["report", "STORE", "-o", "out"], {}, ["-o", "out"]),
    ("report-o-under-file", {"f": "x"}, ["report", "STORE", "-o", "f/x.html"], {}, ["-o", "f/x.html"]),
    ("dashboard-o-folder", {"out/x": "x"}, ["dashboard", "STORE", "-o", "out"], {}, ["-o", "out"]),
    ("report-store-is-file", {"st": "x"}, ["report", "st", "-o", "r.html"], {}, ["st"]),
    ("report-store-missing", {}, ["report", "nostore", "-o", "r.html"], {}, ["nostore"]),
    ("compare-store-missing", {}, ["compare", "previous", "latest", "--store", "nostore"], {}, ["nostore"]),
    ("plugins-missing-module", {}, ["list", "methods"], {"QBENCH_PLUGINS": "no_such_module"}, ["QBENCH_PLUGINS", "no_such_module"]),
    ("plugins-missing-module-run", _suite(""), RUN, {"QBENCH_PLUGINS": "no_such_module"}, ["QBENCH_PLUGINS", "no_such_module"]),
    ("plugins-broken-module", {"brokenplug.py": "raise RuntimeError('boom at import')\n"}, ["list"], {"QBENCH_PLUGINS": "brokenplug", "PYTHONPATH": "{d}"}, ["QBENCH_PLUGINS", "brokenplug", "boom at import"]),
    ("run-threads-zero", {}, ["run", "--model", "digits_cnn", "--threads", "0", "--dry-run"], {}, ["--threads"]),
    ("run-threads-text", {"m.onnx": b"x"}, ["run", "--model", "m.onnx", "--threads", "two", "--dry-run"], {}, ["--threads"]),
    ("run-batch-huge", {}, ["run", "--model", "digits_cnn", "--batch", "100000000", "--dry-run"], {}, ["--batch", "65536"]),
    ("run-model-missing", {}, ["run", "--model", "nothere.onnx", "--dry-run"], {}, ["--model", "nothere.onnx"]),
    ("run-data-param-no-equals", {}, ["run", "--model", "digits_cnn", "--data", "synthetic", "--data-param", "resize", "--dry-run"], {}, ["--data-param", "resize"]),
    ("run-executor-unknown", _suite("backends: [\"null\"]\n"), ["run", "s.yaml", "--executor", "warp"], {}, ["warp"]),
    ("run-resume-nothing", _suite("backends: [\"null\"]\n"), ["run", "s.yaml", "--resume", "--store", "empty"], {}, ["--resume"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def store_with_a_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store holding one finished run of one null-backend cell."""
    d = tmp_path_factory.mktemp("store")
    (d / "s.yaml").write_text(
        'name: one\nmodels: [digits_cnn]\nbackends: ["null"]\n'
        "measurement: {warmup: 1, min_iters: 3, min_seconds: 0.01}\naccuracy: {samples: 20}\n"
        'power: "off"\n'
    )
    proc = _qbench(["run", "s.yaml", "--store", "store", "--no-report", "-q"], d, {})
    assert proc.returncode == 0, proc.stderr
    return d / "store"


def _write_files(folder: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _qbench(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.pop("QBENCH_PLUGINS", None)
    full.update({k: v.replace("{d}", str(cwd)) for k, v in env.items()})
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "qbench.cli", *argv],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("case", "files", "argv", "env", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_broken_input_is_one_line_exit_2(
    tmp_path: Path,
    store_with_a_run: Path,
    case: str,
    files: dict[str, Any],
    argv: list[str],
    env: dict[str, str],
    words: list[str],
) -> None:
    _write_files(tmp_path, files)
    argv = [str(store_with_a_run) if a == "STORE" else a for a in argv]
    proc = _qbench(argv, tmp_path, env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qbench: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not Path("/tmp/qbench-pwned").exists()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
