# ruff: noqa: E501  (the corpus is a table: one case per line reads best)
"""A corpus of broken suites, device files and command lines: each one is refused before
anything runs with exit code 2 and ONE line on stderr that names the file (or flag) at fault,
never a traceback.

Each case is (id, files, argv, env, words): `files` are written into a fresh folder (text, or
bytes for binary files, FIFO for a named pipe, a function of the path for files built there),
`argv` is the qbench command line run there ({d} is that folder; STORE a store holding one
run, STORE_COPY a copy of it in the folder, as `store`, that `files` may add to), `env` extra
environment (FSIZE_KB: the largest file, in KiB, the command may write, as `ulimit -f`: a
full disk), `words` what the one line must contain.

STORE_CASES are damaged stores that readers read on: exit 0, no traceback, no hang, and every
line on stderr a warning naming the file at fault.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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


class Fifo:
    """A named pipe among a case's files: whoever opens it to read waits for a writer."""


FIFO: Any = Fifo()
FSIZE_KB = "FSIZE_KB"  # not passed on: the RLIMIT_FSIZE of the command (see _qbench)
# A case that hangs is stopped after this long and counted as a hang (fault_corpus.py).
CASE_TIMEOUT_S = 120


def _npz(**arrays: Any) -> bytes:
    out = io.BytesIO()
    np.savez(out, **{k: np.asarray(v) for k, v in arrays.items()})
    return out.getvalue()


def _png(value: int = 128) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (10, 10), value).save(out, "PNG")
    return out.getvalue()


def _runs_with_only_run_id(path: Path) -> None:
    """The store's only runs file, holding a run_id column and nothing else."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for other in path.parent.glob("*.parquet"):
        other.unlink()
    pq.write_table(pa.table({"run_id": ["bare"]}), path)


def _runs_of(run_id: str) -> Callable[[Path], None]:
    """A runs Parquet file holding one run row of `run_id`."""

    def write(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"run_id": [run_id], "suite": ["t"]}), path)

    return write


# A crafted store's journal: a well-formed run entry whose run id climbs out of the store
# (qbench wrote STORE/../escaped_run.parquet from it), and one holding another run's id.
ESCAPE_JOURNAL = "st/journal/20261208T002440Z-6b3f3d.jsonl"
ESCAPING_RUN = '{"kind": "run", "row": {"run_id": "../../escaped_run", "suite": "t"}}\n'
OTHER_RUN = '{"kind": "run", "row": {"run_id": "20250101T000000Z-aaaaaa", "suite": "t"}}\n'


X8 = np.zeros((6, 1, 8, 8), np.float32)  # six 8x8 grey inputs, as digits_cnn takes
LABELS = np.arange(6)


def _with(index: tuple[int, ...], value: float) -> np.ndarray:
    x = X8.copy()
    x[index] = value
    return x


def _arrays(npz: bytes) -> dict[str, Any]:
    return {**_suite("accuracy: {dataset: {name: arrays, params: {path: d.npz}}}\n"), "d.npz": npz}


def _images(extra: dict[str, Any], params: str = "mean: [0.5], std: [0.5]") -> dict[str, Any]:
    suite = _suite("accuracy: {dataset: {name: image_folder, params: {path: imgs, crop: 8, "
                   f"resize: 8, channel_order: L, {params}}}}}}}\n")  # fmt: skip
    files = {f"imgs/{c}/{i}.png": _png(40 * i) for c in "ab" for i in range(3)}
    return {**suite, **files, **extra}


NULL = 'backends: ["null"]\n'
STORE_SUITE = (NULL + "measurement: {warmup: 1, min_iters: 3, max_iters: 3, min_seconds: 0}\n"
               'accuracy: {samples: 20}\npower: "off"\n')  # fmt: skip
DEEP_LINE = "[" * 200_000 + "]" * 200_000 + "\n"

RUN = ["run", "s.yaml", "--dry-run"]
CASES: list[tuple[str, dict[str, Any], list[str], dict[str, str], list[str]]] = [
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
    # (kh: a known_hosts file that exists, so nothing but `options` can be at fault)
    ("ssh-options-host-keys-off", {**_device(SSH + "    host: box\n    known_hosts: kh\n    options: [StrictHostKeyChecking=no, UserKnownHostsFile=/dev/null]\n"), "kh": ""}, RUN, {}, ["board.yaml", "options", "StrictHostKeyChecking=no", "host_key_check"]),
    ("ssh-options-lowercase-space", {**_device(SSH + "    host: box\n    known_hosts: kh\n    options: ['userknownhostsfile /dev/null']\n"), "kh": ""}, RUN, {}, ["board.yaml", "options", "known_hosts"]),
    ("ssh-options-global-known-hosts", {**_device(SSH + "    host: box\n    known_hosts: kh\n    options: [GlobalKnownHostsFile=/tmp/k]\n"), "kh": ""}, RUN, {}, ["board.yaml", "options", "host keys are trusted"]),
    ("ssh-options-pkcs11", {**_device(SSH + "    host: box\n    known_hosts: kh\n    options: [PKCS11Provider=/tmp/qbench-pwned.so]\n"), "kh": ""}, RUN, {}, ["board.yaml", "options", "load a library"]),
    ("ssh-options-sk-provider", {**_device(SSH + "    host: box\n    known_hosts: kh\n    options: ['SecurityKeyProvider /tmp/qbench-pwned.so']\n"), "kh": ""}, RUN, {}, ["board.yaml", "options", "load a library"]),
    ("ssh-options-proxyjump-option", {**_device(SSH + "    host: box\n    known_hosts: kh\n    options: [ProxyJump=-oProxyCommand=touch]\n"), "kh": ""}, RUN, {}, ["board.yaml", "options", "ProxyJump=[USER@]HOST"]),
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
    # --- cells that would be one: labels holding the cell id's separator, entries repeated
    ("label-slash-model", {"s.yaml": "name: t\nmodels: [{name: digits_cnn, label: d/sq}, {name: digits_cnn, label: d}]\nmethods: [fp32, {name: fp32, label: sq/fp32}]\n" + NULL}, RUN, {}, ["s.yaml:2", "models[0].label", "'/'"]),
    ("label-slash-method", _suite("methods: [fp32, {name: fp32, label: sq/fp32}]\n" + NULL), RUN, {}, ["s.yaml:3", "methods[1].label", "'/'"]),
    ("model-repeated-500", {"s.yaml": "name: t\nmodels: [" + ", ".join(["digits_cnn"] * 500) + "]\n" + NULL}, RUN, {}, ["s.yaml:2", "models[1]", "models[0]"]),
    ("method-label-reads-as-params", _suite("methods: [{name: static_int8, params: {calibrator: entropy}}, {name: static_int8, label: 'static_int8[calibrator=entropy]'}]\n" + NULL), RUN, {}, ["s.yaml:3", "methods[1]", "methods[0]"]),
    ("batch-repeated", _suite("scenario: {batch: [1, 1]}\n" + NULL), RUN, {}, ["s.yaml:3", "scenario.batch[1]"]),
    ("device-name-slash", _device("name: a/b\nkind: cpu\n"), RUN, {}, ["board.yaml:1", "name", "'/'"]),
    # --- rules that match no cell
    ("include-batch-negative", _suite("include: [{batch: -5}]\n" + NULL), RUN, {}, ["s.yaml:3", "include[0]", "batch -5"]),
    ("exclude-misspelt", _suite("exclude: [{method: fp23}]\n" + NULL), RUN, {}, ["s.yaml:3", "exclude[0]", "fp23"]),
    # --- data that would be measured as a plausible number: NaN/Inf inputs, labels no class
    ("arrays-nan-input", _arrays(_npz(input=_with((3, 0, 2, 2), np.nan), labels=LABELS)), RUN, {}, ["s.yaml:3", "d.npz", "input[3]", "nan"]),
    ("arrays-inf-input", _arrays(_npz(input=_with((4, 0, 0, 0), np.inf), labels=LABELS)), RUN, {}, ["d.npz", "input[4]", "inf"]),
    ("arrays-negative-label", _arrays(_npz(input=X8, labels=[0, 1, -1, 3, 4, 5])), RUN, {}, ["d.npz", "label [2]", "-1"]),
    ("arrays-nan-label", _arrays(_npz(input=X8, labels=[0, 1, 2, np.nan, 4, 5])), RUN, {}, ["d.npz", "label [3]", "nan"]),
    ("arrays-fraction-label", _arrays(_npz(input=X8, labels=[0, 1.5, 2, 3, 4, 5])), RUN, {}, ["d.npz", "label [1]"]),
    ("images-empty-jpeg", _images({"imgs/a/zero.jpg": b""}), RUN, {}, ["s.yaml:3", "zero.jpg", "empty"]),
    ("images-text-jpeg", _images({"imgs/b/x.jpg": "not a picture\n"}), RUN, {}, ["x.jpg", "not an image"]),
    ("images-corrupt-png", _images({"imgs/b/c.png": _png()[:40]}), RUN, {}, ["c.png"]),
    ("images-negative-csv-label", _images({"l.csv": "a/0.png,1\na/1.png,-1\n"}, "mean: [0.5], std: [0.5], labels_csv: l.csv"), RUN, {}, ["l.csv:2", "-1"]),
    ("images-scale-inf", _images({}, "mean: [0.5], std: [0.5], scale: .inf"), RUN, {}, ["s.yaml:3", "scale", "finite"]),
    ("images-grey-three-means", _images({}, "layout: NCHW"), RUN, {}, ["channel_order L", "one value"]),
    # --- bad input that passed the plan and failed in the cell
    ("calibration-seed-negative", _suite("calibration: {seed: -1}\n"), RUN, {}, ["s.yaml:3", "calibration.seed"]),
    ("gguf-is-text", {"s.yaml": "name: t\nmodels: [{name: hf_local, params: {path: m.gguf}}]\nbackends: [torch]\n", "m.gguf": "just text\n"}, RUN, {}, ["s.yaml:2", "m.gguf", "GGUF"]),
    ("ssh-connect-timeout-huge", _device(SSH + "    host: box\n    connect_timeout: 1000000\n"), RUN, {}, ["board.yaml", "connect_timeout", "600"]),
    ("prompt-lengths-huge", _suite("measurement: {prompt_lengths: [100000000]}\n"), RUN, {}, ["s.yaml:3", "prompt_lengths", "131072"]),
    ("device-file-empty", _device(""), RUN, {}, ["board.yaml", "device fields"]),
    # --- flags: one line, not argparse's usage
    ("run-budget-out-of-range", _suite(""), ["run", "s.yaml", "--budget", "2", "--dry-run"], {}, ["--budget", "fraction"]),
    ("tune-time-budget-text", _suite(""), ["tune", "s.yaml", "--time-budget", "soon"], {}, ["--time-budget", "duration"]),
    # --- files that are no regular file: a FIFO would hang, /dev/zero stream forever
    ("suite-fifo", {"s.yaml": FIFO}, RUN, {}, ["s.yaml", "FIFO"]),
    ("suite-dev-zero", {}, ["run", "/dev/zero", "--dry-run"], {}, ["/dev/zero", "not a regular file"]),
    ("device-fifo", _device(FIFO), RUN, {}, ["s.yaml:3", "devices[0]", "board"]),
    # --- files that cannot be written: one line, no partial file, the rows measured kept
    ("run-store-journal-is-file", {**_suite(STORE_SUITE), "st/journal": "a file"}, ["run", "s.yaml", "--store", "st", "--no-report", "-q"], {}, ["st/journal", "cannot be written"]),
    ("run-disk-full", _suite(STORE_SUITE + "scenario: {batch: [1, 2, 4, 8, 16]}\n"), ["run", "s.yaml", "--store", "st", "--no-report", "-q", "--no-confirm"], {FSIZE_KB: "8"}, ["st", "File too large", "kept"]),
    ("report-disk-full", {}, ["report", "STORE", "-o", "r.html"], {FSIZE_KB: "64"}, ["r.html", "File too large"]),
    ("dashboard-disk-full", {}, ["dashboard", "STORE", "-o", "d.html"], {FSIZE_KB: "64"}, ["d.html", "File too large"]),
    # --- names read from a store that become file names: a run id with path components
    ("run-journal-run-id-escapes", {**_suite(NULL), ESCAPE_JOURNAL: ESCAPING_RUN}, ["run", "s.yaml", "--store", "st", "--no-report", "-q", "--no-confirm"], {}, [ESCAPE_JOURNAL, "'../../escaped_run'"]),
    ("resume-journal-run-id-escapes", {**_suite(NULL), ESCAPE_JOURNAL: ESCAPING_RUN}, ["run", "s.yaml", "--store", "st", "--resume", "--no-report", "-q"], {}, [ESCAPE_JOURNAL, "'../../escaped_run'"]),
    ("report-journal-run-id-escapes", {ESCAPE_JOURNAL: ESCAPING_RUN}, ["report", "st", "-o", "r.html"], {}, [ESCAPE_JOURNAL, "'../../escaped_run'"]),
    ("report-runs-run-id-escapes", {"st/runs/x.parquet": _runs_of("../../escaped_run")}, ["report", "st", "-o", "r.html"], {}, ["st/runs/x.parquet", "'../../escaped_run'"]),
    ("run-journal-run-id-of-another-run", {**_suite(NULL), ESCAPE_JOURNAL: OTHER_RUN}, ["run", "s.yaml", "--store", "st", "--no-report", "-q", "--no-confirm"], {}, [ESCAPE_JOURNAL, "does not match"]),
    ("probe-write-folder-force", {"dev.yaml/x": "x"}, ["devices", "probe", "--write", "dev.yaml", "--force"], {}, ["--write", "dev.yaml", "folder"]),
]  # fmt: skip

STORE_CASES: list[tuple[str, dict[str, Any], list[str], dict[str, str], list[str]]] = [
    ("report-journal-fifo", {"store/journal/x.jsonl": FIFO}, ["report", "STORE_COPY", "-o", "r.html"], {}, ["x.jsonl", "FIFO"]),
    ("run-journal-fifo", {"store/journal/x.jsonl": FIFO, "s.yaml": HEAD + STORE_SUITE}, ["run", "s.yaml", "--store", "STORE_COPY", "--no-report", "-q", "--no-confirm"], {}, ["x.jsonl", "FIFO"]),
    ("report-journal-deep", {"store/journal/deep.jsonl": DEEP_LINE}, ["report", "STORE_COPY", "-o", "r.html"], {}, ["deep.jsonl"]),
    ("report-runs-only-run-id", {"store/runs/bare.parquet": _runs_with_only_run_id}, ["report", "STORE_COPY", "-o", "r.html"], {}, []),
    ("dashboard-runs-only-run-id", {"store/runs/bare.parquet": _runs_with_only_run_id}, ["dashboard", "STORE_COPY", "-o", "d.html"], {}, []),
    ("report-results-fifo", {"store/results/x.parquet": FIFO}, ["report", "STORE_COPY", "-o", "r.html"], {}, ["x.parquet", "not a regular file"]),
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
        if isinstance(content, Fifo):
            os.mkfifo(path)
        elif callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _prepare(folder: Path, store: Path, files: dict[str, Any], argv: list[str]) -> list[str]:
    """Write a case's files into `folder` (a copy of `store` first, where argv has
    STORE_COPY) and return its argv with the store placeholders replaced."""
    if "STORE_COPY" in argv:
        shutil.copytree(store, folder / "store")
    _write_files(folder, files)
    return [str(store) if a == "STORE" else "store" if a == "STORE_COPY" else a for a in argv]


def _file_size_limit(kib: int) -> Callable[[], None]:
    def limit() -> None:  # in the child, before exec: its writes beyond this fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))

    return limit


def _qbench(argv: list[str], cwd: Path, env: dict[str, str],
            timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = dict(os.environ)
    full.pop("QBENCH_PLUGINS", None)
    full.update({k: v.replace("{d}", str(cwd)) for k, v in env.items() if k != FSIZE_KB})
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH", "")]))
    limit = _file_size_limit(int(env[FSIZE_KB])) if FSIZE_KB in env else None
    return subprocess.run(
        [sys.executable, "-m", "qbench.cli", *argv],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


def _run_case(tmp_path: Path, store: Path, files: dict[str, Any], argv: list[str],
              env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:  # fmt: skip
    """A corpus case run as the real command: the process and its non-empty stderr lines; no
    case may print a traceback."""
    proc = _qbench(_prepare(tmp_path, store, files, argv), tmp_path, env, CASE_TIMEOUT_S)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, [ln for ln in proc.stderr.splitlines() if ln.strip()]


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
    proc, lines = _run_case(tmp_path, store_with_a_run, files, argv, env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qbench: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not Path("/tmp/qbench-pwned").exists()
    # no partial output: a temporary file beside an output, or a page cut short by a full disk
    partial = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".html"))]
    assert not [p for p in partial if p.is_file()], partial


@pytest.mark.parametrize(
    ("case", "files", "argv", "env", "words"), STORE_CASES, ids=[c[0] for c in STORE_CASES]
)
def test_a_damaged_store_is_read_on_with_one_warning_per_file(
    tmp_path: Path,
    store_with_a_run: Path,
    case: str,
    files: dict[str, Any],
    argv: list[str],
    env: dict[str, str],
    words: list[str],
) -> None:
    proc, lines = _run_case(tmp_path, store_with_a_run, files, argv, env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert all(ln.startswith("qbench: warning: ") for ln in lines), proc.stderr
    assert bool(lines) == bool(words), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# slow: 10 s; the default run is near its 15-minute budget
@pytest.mark.slow
def test_a_full_disk_stops_the_run_and_keeps_every_row_measured(
    tmp_path: Path, store_with_a_run: Path
) -> None:
    """The journal outgrows what the run may write at its fourth row: the three rows before it
    are kept, the run reads interrupted (not finished), and --resume measures the rest."""
    from qbench.store.parquet import load

    case = next(c for c in CASES if c[0] == "run-disk-full")
    proc = _qbench(_prepare(tmp_path, store_with_a_run, case[1], case[2]), tmp_path, case[3])
    assert proc.returncode == 2, proc.stderr
    runs, results = load(tmp_path / "st")
    assert list(runs.run_state) == ["interrupted"]
    assert 1 <= len(results) < 5 and set(results.status) == {"ok"}
    resumed = _qbench(["run", "s.yaml", "--store", "st", "--no-report", "-q", "--no-confirm",
                       "--resume"], tmp_path, {})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    runs, results = load(tmp_path / "st")
    assert list(runs.run_state) == ["finished"] and len(results) == 5


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES + STORE_CASES}) == len(CASES) + len(STORE_CASES)
