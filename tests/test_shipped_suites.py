"""The suites shipped in suites/: none of them encodes one machine's facts.

Which cells can run, and which would run pathologically slowly, is decided at run time by the
probe (ISA flags) and by each method's and backend's own rules, which skip a cell with its
reason. A suite's include/exclude rules may only tidy away cells that no machine could run
(the plan skips them anyway) or scope choices that have nothing to do with the hardware: a
simulation measured twice, the harness-overhead `null` backend. A rule that removes a cell a
capable machine would run natively — "torch bf16 is slow on this CPU" — fails here, whatever
CPU the test runs on: planning sees a CPU with every ISA feature and every backend available.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qbench import plan as plan_module
from qbench.hostinfo import QUANT_FLAGS
from qbench.plan import build_plan
from qbench.plugins import load_all
from qbench.suite.loader import load_suite
from tests.conftest import write_suite
from tests.test_suite_errors import your_model_layout

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "suites").glob("*.yaml"))
X86_FLAGS = tuple(f for f in QUANT_FLAGS if not f.startswith(("asimd", "sve", "sme", "i8mm")))
X86_FLAGS = tuple(f for f in X86_FLAGS if f not in ("bf16", "fphp"))


@pytest.fixture()
def capable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning as on an x86 CPU with every feature and every backend's packages/devices."""
    monkeypatch.setattr(plan_module, "_host_flags", lambda: X86_FLAGS)
    fam = load_all()
    for name in fam.backends.names():
        monkeypatch.setattr(fam.backends.get(name), "unavailable", lambda self: None)


def rule_removed_runnable_cells(path: Path) -> list[str]:
    suite, source = load_suite(path)
    fam = load_all()
    ruled = {c.cell_id for c in build_plan(suite, source).cells}
    unruled = build_plan(suite.model_copy(update={"exclude": [], "include": []}), source)
    offenders = []
    for cell in unruled.cells:
        if cell.cell_id in ruled or cell.skip_reason or cell.backend == "null":
            continue
        method = fam.methods.get(cell.method)()
        typed = method.Params(**cell.method_params)
        if method.execution(cell.artifact_format, typed) == "simulated":
            continue
        offenders.append(cell.cell_id)
    return offenders


def test_the_suites_are_found() -> None:
    assert {p.name for p in SHIPPED} >= {"cnn.yaml", "methods.yaml", "gpu.yaml"}


# your_model.yaml loads a user's model file to plan (13 s): with the slow tests, as the default
# run is near its 15-minute budget
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name == "your_model.yaml" else p
     for p in SHIPPED],
    ids=lambda p: p.name,
)  # fmt: skip
def test_no_shipped_suite_excludes_a_cell_a_capable_cpu_would_run(
    path: Path, capable_host: None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if path.name == "your_model.yaml":  # its model files are made by examples/make_examples.py
        path = your_model_layout(tmp_path, request)
    assert rule_removed_runnable_cells(path) == []


def test_a_hardware_exclusion_is_caught(tmp_path: Path, capable_host: None) -> None:
    """The check itself: the exclusion cnn.yaml carried for a CPU without AVX512-FP16."""
    path = write_suite(
        tmp_path,
        """
name: old
models: [resnet18]
methods: [fp32, bf16, fp16, weight_only]
backends: [torch, onnxruntime]
devices: [local]
exclude:
  - {method: [fp16, bf16], backend: torch, model: [resnet18, mobilenet_v2]}
  - {method: weight_only, backend: torch}
""",
    )
    offenders = rule_removed_runnable_cells(path)
    assert sorted(offenders) == [
        "resnet18/bf16/torch/local/b1/t1",
        "resnet18/fp16/torch/local/b1/t1",
    ]


def test_the_default_suite_keeps_every_cell_and_says_why_one_is_skipped(
    capable_host: None,
) -> None:
    suite, source = load_suite(ROOT / "suites" / "cnn.yaml")
    assert suite.exclude == [] and suite.include == []
    plan = build_plan(suite, source)
    skipped = [c for c in plan.cells if c.skip_reason]
    assert plan.excluded == 0
    assert all(len(c.skip_reason or "") > 20 for c in skipped)
    runs = {(c.method, c.backend) for c in plan.cells if not c.skip_reason}
    for pair in [("bf16", "torch"), ("fp16", "torch"), ("static_int8", "torch"),
                 ("static_int8", "onnxruntime"), ("nncf_int8", "openvino"),
                 ("bf16", "openvino"), ("fp32", "openvino")]:  # fmt: skip
        assert pair in runs


def test_readiness_skips_torch_half_precision_on_a_cpu_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AVX-512 CPU without AVX512-FP16 or any bf16 instruction (e.g. AMD Zen 3 / Skylake):
    torch fp16/bf16 cells are skipped with the probe's reason, unless slow_kernels asks."""
    monkeypatch.setattr(plan_module, "_host_flags", lambda: ("avx2", "fma", "avx512f", "avx512bw"))
    path = write_suite(
        tmp_path,
        """
name: half
models: [digits_cnn]
methods: [fp32, fp16, bf16]
backends:
  - torch
  - {name: torch, params: {slow_kernels: true}}
devices: [local]
""",
    )
    cells = {c.cell_id: c.skip_reason for c in build_plan(*load_suite(path)).cells}
    assert cells["digits_cnn/fp32/torch/local/b1/t1"] is None
    fp16 = cells["digits_cnn/fp16/torch/local/b1/t1"]
    assert fp16 and "no AVX512-FP16/AMX-FP16" in fp16 and "slow_kernels: true" in fp16
    assert "no AVX512-BF16/AMX-BF16" in (cells["digits_cnn/bf16/torch/local/b1/t1"] or "")
    assert cells["digits_cnn/fp16/torch[slow_kernels=True]/local/b1/t1"] is None
    assert cells["digits_cnn/bf16/torch[slow_kernels=True]/local/b1/t1"] is None
