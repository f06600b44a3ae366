"""Another installed package adds members through the `qbench.plugins` entry-point group."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import run_qbench


def _fake_distribution(site: Path, target: str) -> None:
    """A real (if minimal) installed distribution: importlib.metadata finds it on sys.path."""
    dist = site / "qbench_fake_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qbench-fake-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(f"[qbench.plugins]\nfake = {target}\n")


def test_entry_point_module_registers_members(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "tests.plugins.faulty")
    proc = run_qbench("list", "backends", extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "faulty" in proc.stdout and "needs_missing" in proc.stdout


def test_entry_point_callable_receives_the_families(tmp_path: Path) -> None:
    (tmp_path / "fake_hook.py").write_text(
        "from qbench.backends.base import Backend\n"
        "def register(families):\n"
        "    class Hooked(Backend):\n"
        "        name = 'hooked'\n"
        "        description = 'registered by an entry-point callable'\n"
        "        loads = ('onnx',)\n"
        "        requires = ()\n"
        "    families.backends.register(Hooked)\n"
    )
    _fake_distribution(tmp_path, "fake_hook:register")
    proc = run_qbench("list", "backends", extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "hooked" in proc.stdout and "registered by an entry-point callable" in proc.stdout
    assert os.environ.get("QBENCH_PLUGINS") in (None, "")
