"""Shared fixtures: an isolated cache, a tiny real ONNX model, suite writing helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test process and its children share one throw-away cache."""
    cache = tmp_path_factory.mktemp("qbench-cache")
    os.environ["QBENCH_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ with the files `examples/make_examples.py` writes into examples/generated/
    (a small CNN trained on photo crops, its exports, the data), made once per session."""
    import shutil

    folder = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(REPO / "examples", folder, ignore=shutil.ignore_patterns("generated"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    made = subprocess.run([sys.executable, str(folder / "make_examples.py")],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return folder


def make_tiny_onnx(path: Path, in_ch: int = 1, size: int = 8, classes: int = 10) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, seeded random weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (16, in_ch, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 16).astype(np.float32)
    fc = rng.normal(0, 0.5, (classes, 16)).astype(np.float32)
    fcb = np.zeros(classes, np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", in_ch, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fcb, "fcb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


def write_suite(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


FAST_MEASUREMENT = "measurement: {warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: 120}"


def run_qbench(
    *args: str,
    cwd: Path | None = None,
    plugins: str = "",
    timeout: float = 900,
    extra_path: str = "",
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    paths = [str(REPO), extra_path, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    if plugins:
        env["QBENCH_PLUGINS"] = plugins
    return subprocess.run(
        [sys.executable, "-m", "qbench.cli", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
