"""Every script under benchmarks/ runs, at tiny settings, as the real subprocess a reader of its
figures would start, and prints what its figures are made of (a table header and a row), so
that the numbers quoted from them stay reproducible (issue 28)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_MEASUREMENT, REPO, make_tiny_onnx, run_qbench, write_suite

BENCH = REPO / "benchmarks"
SMOKED = {  # script -> the test that runs it (a new script needs one)
    "architecture.py",
    "fault_corpus.py",
    "harness_overhead.py",
    "int8_agreement_seeds.py",
    "int8_speedup.py",
    "measure_isolation.py",
    "model_zoo_light.py",
    "openvino_layers.py",
    "own_model_properties.py",
    "phantom_quantization.py",
    "reader_kill.py",
    "regression_detection.py",
    "transformers_goals.py",
    "x86_goals.py",
}


def _script(name: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """stdout of `python benchmarks/NAME ARGS` (this venv's python); it must exit 0."""
    env = dict(os.environ, PYTHONPATH=str(REPO))  # the cache: conftest's isolated one
    env.pop("QBENCH_PLUGINS", None)
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def test_every_benchmark_script_has_a_smoke_test() -> None:
    assert {p.name for p in BENCH.glob("*.py")} == SMOKED


def test_architecture_figures_find_what_they_count(tmp_path: Path) -> None:
    """On a tiny package the script builds: one import cycle (a <-> b, one of them lazy), one
    format comparison outside formats/, one long function; its own package's figures print."""
    pkg = tmp_path / "qbench"
    (pkg / "formats").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "formats" / "__init__.py").write_text("def f(fmt):\n    return fmt == 'onnx'\n")
    (pkg / "a.py").write_text("from qbench import b\n\n\ndef g(fmt):\n"
                              "    return fmt in ('tflite', 'torch')\n")  # fmt: skip
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (pkg / "b.py").write_text(f"def lazy():\n    import qbench.a\n{body}\n")
    figures = json.loads(_script("architecture.py", "--root", str(pkg), "--json", cwd=tmp_path))
    assert figures["import_cycles"] == [["qbench.a", "qbench.b"]]
    assert figures["format_comparisons_by_module"] == {"qbench.a": 1}  # formats/ not counted
    assert [f for f, _ in figures["functions_over_80_lines"]] == ["qbench.b:lazy"]
    out = _script("architecture.py", cwd=tmp_path)
    assert out.splitlines()[0].split() == ["figure", "value", "target"]
    assert "import cycles" in out and "plugin names outside their module" in out


def test_harness_overhead(tmp_path: Path) -> None:
    out = _script("harness_overhead.py", "--models", "digits_cnn", "--rounds", "2",
                  "--iters", "20", cwd=tmp_path)  # fmt: skip
    lines = out.splitlines()
    assert lines[0].split() == ["model", "qbench", "p50", "ms", "bare", "p50", "ms", "ratio"]
    model, qbench_ms, bare_ms, ratio = lines[1].split()
    assert model == "digits_cnn" and float(qbench_ms) > 0 and float(bare_ms) > 0
    assert 0.2 < float(ratio) < 5  # the same session timed two ways
    assert lines[-1].startswith("largest |ratio - 1|: ")


def test_int8_speedup(tmp_path: Path) -> None:
    variants = ["onnxruntime:fp32", "onnxruntime:static_int8"]
    out = _script("int8_speedup.py", "--model", "digits_cnn", "--variants", *variants,
                  "--rounds", "2", "--iters", "5", cwd=tmp_path)  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("cpu: ")
    assert lines[1].split()[:3] == ["variant", "p50", "ms"]
    fp32, int8 = lines[2].split(), lines[3].split()
    assert fp32[:3] == ["onnxruntime:fp32", fp32[1], "1.000"] and float(fp32[1]) > 0
    assert int8[0] == "onnxruntime:static_int8" and float(int8[2]) > 0
    assert "quantized" in lines[3] and "native" in lines[3]


def test_x86_goals(tmp_path: Path) -> None:
    out = _script("x86_goals.py", "--models", "digits_cnn", "--variants",
                  "ort int8 (QDQ U8S8)", "--processes", "1", "--rounds", "2", "--seconds",
                  "0.02", cwd=tmp_path)  # fmt: skip
    assert "## digits_cnn (1 thread, batch 1" in out
    rows = {ln[:28].strip(): ln[28:].split() for ln in out.splitlines() if ln.startswith("ort ")}
    assert set(rows) == {"ort fp32", "ort int8 (QDQ U8S8)"}  # the anchor is always timed
    assert float(rows["ort fp32"][1]) == 1.0 and float(rows["ort int8 (QDQ U8S8)"][0]) > 0
    assert "## goals" in out


def test_openvino_layers(tmp_path: Path) -> None:
    _needs("openvino")
    out = _script("openvino_layers.py", "--model", "digits_cnn", "--calls", "10",
                  "--variants", "openvino fp32", cwd=tmp_path)  # fmt: skip
    assert "## digits_cnn, openvino fp32: layers " in out
    assert " ms per call" in out and "Convolution" in out


def test_int8_agreement_seeds(tmp_path: Path) -> None:
    out = _script("int8_agreement_seeds.py", "--model", "digits_cnn", "--backend", "onnxruntime",
                  "--seeds", "0", "--datasets", "digits", "--samples", "40", "--quick",
                  "--keep", str(tmp_path / "stores"), cwd=tmp_path)  # fmt: skip
    (row,) = [ln for ln in out.splitlines()[1:] if ln.startswith("digits ")][-1:]
    assert "seed 0  agreement " in row and "SQNR" in row and "x fp32" in row
    assert "40 crops" in row
    assert "digits_cnn static_int8 {} on onnxruntime" in out


def test_model_zoo_light(tmp_path: Path) -> None:
    out = _script("model_zoo_light.py", "--methods", "fp32", "--graphs", "light_squeezenet",
                  "--samples", "4", "--min-seconds", "0.05", "--keep", str(tmp_path),
                  cwd=tmp_path)  # fmt: skip
    header, *rows = [ln for ln in out.splitlines() if ln.startswith(("model ", "light_"))]
    assert header.split()[:4] == ["model", "method", "status", "p50"]
    (row,) = rows
    assert row.split()[:3] == ["light_squeezenet", "fp32", "ok"] and "1.00x" in row


def test_measure_isolation(tmp_path: Path) -> None:
    _needs("ai_edge_litert")
    out = _script("measure_isolation.py", "--models", "digits_cnn", cwd=tmp_path)
    assert "digits_cnn/fp32/litert/local/b1/t1" in out and "peak RSS" in out
    assert "other runtimes in its measure process: none" in out


def test_reader_kill(tmp_path: Path) -> None:
    out = _script("reader_kill.py", cwd=tmp_path)
    assert "rows journalled 5, seen by the reader during the run 2, found after kill -9 5, " \
           "lost 0" in out  # fmt: skip


def test_fault_corpus(tmp_path: Path) -> None:
    out = _script("fault_corpus.py", "--cases", "run-threads-zero,report-o-folder",
                  cwd=tmp_path)  # fmt: skip
    assert out.strip().splitlines()[-1] == (
        "tried: 2  traceback: 0  hang: 0  wrong exit: 0  silently accepted: 0  not one line: 0  "
        "unnamed: 0"
    )


def test_phantom_quantization(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, f"""
        name: phantom
        models: [{{name: onnx_file, params: {{path: {make_tiny_onnx(tmp_path / "t.onnx")},
                                              dataset: digits}}}}]
        methods: [fp32, dynamic_int8]
        backends: [onnxruntime]
        {FAST_MEASUREMENT}
        accuracy: {{samples: 20}}
        power: off
    """)  # fmt: skip
    store = tmp_path / "store"
    run = run_qbench("run", str(suite), "--store", str(store), "--no-report", "-q")
    assert run.returncode == 0, run.stderr[-3000:]
    out = _script("phantom_quantization.py", str(store), cwd=tmp_path)
    assert out.startswith(f"{store}: 2 ok cells, 1 of a quantizing method; phantom (no "
                          "quantized tensor): 0 (")  # fmt: skip


def test_regression_detection(tmp_path: Path) -> None:
    out = _script("regression_detection.py", "--pairs", "1", "--model", "digits_cnn",
                  "--samples", "10", "--quick", "--keep", str(tmp_path / "stores"),
                  cwd=tmp_path, timeout=600)  # fmt: skip
    assert "| pairs | cell | n |" in out
    assert any(ln.startswith("| slowdown |") for ln in out.splitlines())
    assert "measured ratios of the judged latency" in out and "goal on real" in out
    # the stores it kept are judged again without new runs (--reuse)
    again = _script("regression_detection.py", "--model", "digits_cnn", "--reuse",
                    str(tmp_path / "stores"), cwd=tmp_path)  # fmt: skip
    assert again.split("runs\n", 1)[1] == out.split("runs\n", 1)[1].replace(
        f"stores kept in {tmp_path / 'stores'}/quiet and {tmp_path / 'stores'}/slowed\n", ""
    )


def test_transformers_goals(tmp_path: Path) -> None:
    _needs("transformers")
    from tests import tiny_transformers

    # a tiny BERT built here stands in for MiniLM (the script's default, which takes minutes)
    encoder = {"name": "hf_local", "label": "tiny_bert", "params": {
        "path": str(tiny_transformers.encoder(tmp_path / "enc")), "max_length": 24,
        "dataset": {"name": "text_folder",
                    "params": {"path": str(tiny_transformers.documents(tmp_path / "docs"))}},
    }}  # fmt: skip
    out = _script("transformers_goals.py", "--skip-llm", "--variants", "ort fp32,ort int8",
                  "--encoder", json.dumps(encoder), "--rounds", "2", "--seconds", "0.05",
                  cwd=tmp_path)  # fmt: skip
    assert "## tiny_bert: batch 8 x 24 tokens, 1 thread (2 interleaved rounds)" in out
    rows = {ln[:24].strip(): ln[24:].split() for ln in out.splitlines() if ln.startswith("ort ")}
    assert set(rows) == {"ort fp32", "ort int8"} and float(rows["ort int8"][0]) > 0
    assert "quantized 0/" in " ".join(rows["ort fp32"])
    (ratio,) = [ln for ln in out.splitlines() if ln.startswith("ORT int8 / ORT fp32")]
    assert float(ratio.split()[-2].rstrip("x")) > 0


def test_own_model_properties(tmp_path: Path) -> None:
    out = _script("own_model_properties.py", "--models", "regression,scalar", "--samples", "40",
                  "--onnx-backends", "onnxruntime", cwd=tmp_path)  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("| model | cell | status | fidelity judged on")
    rows = {tuple(line.strip("| ").split(" | ")[:2]): line for line in lines[2:]}
    assert len(rows) == 6 and all(" | ok | " in line for line in rows.values())
    # the regression model's int8 cells are judged on an error measure, never on argmax;
    # the scalar-input model (sr=16000 given on the command line) runs, judged on agreement
    assert "fp32_within_tol" in rows[("regression", "static_int8/onnxruntime")]
    assert "fp32_agreement" in rows[("scalar", "static_int8/onnxruntime")]
