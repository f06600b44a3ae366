"""Built-in torch models name themselves (their weights' hash) without building the module:
the prepare stage of a cell whose artifact is cached never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from qbench.models.base import state_dict_file_model, state_dict_sha256  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_state_dict_file_model_remembers_its_hash_and_builds_the_module_when_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QBENCH_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 3)
    weights = tmp_path / "w.pt"
    torch.save(reference.state_dict(), weights)
    built: list[int] = []

    def architecture() -> torch.nn.Module:
        built.append(1)
        return torch.nn.Linear(4, 3)

    first = state_dict_file_model("test", weights, architecture)
    # the hash rows and the artifact cache have always used: the loaded module's state dict
    assert first.sha256 == state_dict_sha256(reference.state_dict())
    assert len(built) == 1  # computing it the first time needed the module ...
    assert torch.equal(first.module.weight, reference.weight)
    assert len(built) == 1  # ... which is then the one handed out

    again = state_dict_file_model("test", weights, architecture)
    assert again.sha256 == first.sha256
    assert len(built) == 1 and again.has_module  # remembered: nothing built yet
    assert torch.equal(again.module.weight, reference.weight) and not again.module.training
    assert len(built) == 2

    torch.save({k: v + 1 for k, v in reference.state_dict().items()}, weights)  # other weights
    changed = state_dict_file_model("test", weights, architecture)
    assert changed.sha256 != first.sha256
    assert changed.sha256 == state_dict_sha256(changed.module.state_dict())


PREPARE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from qbench.agent import prepare
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    plan = build_plan(*load_suite(Path(sys.argv[1])))
    got = prepare(plan.runnable[0])
    print(json.dumps({"torch": "torch" in sys.modules, "model": got["model_sha256"],
                      "cached": got["artifact_cached"]}))
""")


def test_prepare_of_a_cached_cell_does_not_import_torch(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        textwrap.dedent("""
        name: lazy
        models: [digits_cnn]
        methods: [fp32]
        backends: [onnxruntime]
        accuracy: {samples: 16}
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", PREPARE, str(suite)], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert second["cached"] and second["model"] == first["model"]
    assert not second["torch"], "a cached cell's prepare imported torch"
