"""Fleets: `qbench run --executor ray:ADDRESS` on a real local Ray cluster of two nodes, each
holding one device resource. Cells land on the node holding their device, never two at once on
one device; a device no node holds fails the run before anything is written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import FAST_MEASUREMENT, run_qbench, write_suite

pytest.importorskip("ray", reason="the `fleet` extra (ray) is not installed")

RAY = str(Path(sys.executable).with_name("ray"))
NOTE = re.compile(r"^executor: ray node (\w+) on \S+ ran the cell from (\S+) to (\S+)$")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_start(args: list[str], temp_dir: str) -> int:
    """`ray start` in its own process group (its daemons stay in it); returns the group id."""
    proc = subprocess.Popen(
        [RAY, "start", *args, "--num-cpus=1", "--object-store-memory=100000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_TMPDIR": temp_dir, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return proc.pid


def _stop(groups: list[int]) -> None:
    """End the process groups this fixture started (and nothing else)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in reversed(groups):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(g) for g in groups):
            time.sleep(0.2)


def _alive(pgid: int) -> bool:
    """Some process of the group still runs (zombies waiting for their reaper do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """Head holding dev:alpha, a worker node holding dev:beta; node ids by device."""
    temp_dir = tempfile.mkdtemp(prefix="qray-", dir="/tmp")  # short: unix socket paths
    # The cluster's own token, for its nodes and every client of it (this process's children):
    # nothing read from or written to ~/.ray/auth_token, whatever other Ray runs left there.
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    port, client, dash, agent_grpc, agent_http, metrics, env_agent = _free_ports(7)
    address = f"127.0.0.1:{port}"
    groups: list[int] = []
    try:
        groups.append(
            _ray_start(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={port}",
                    f"--ray-client-server-port={client}",
                    f"--dashboard-port={dash}",
                    f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--dashboard-agent-listen-port={agent_http}",
                    f"--metrics-export-port={metrics}",
                    f"--runtime-env-agent-port={env_agent}",
                    "--include-dashboard=false",
                    f"--temp-dir={temp_dir}",
                    '--resources={"dev:alpha": 1}',
                ],
                temp_dir,
            )
        )
        agent_grpc, agent_http, metrics, env_agent = _free_ports(4)
        groups.append(
            _ray_start(
                [
                    f"--address={address}",
                    "--node-ip-address=127.0.0.1",
                    f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--dashboard-agent-listen-port={agent_http}",
                    f"--metrics-export-port={metrics}",
                    f"--runtime-env-agent-port={env_agent}",
                    '--resources={"dev:beta": 1}',
                ],
                temp_dir,
            )
        )
        nodes = _nodes(address)
        yield {"address": address, "node_of": nodes}
    finally:
        _stop(groups)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _nodes(address: str) -> dict[str, str]:
    """{device: id of the node holding dev:DEVICE}, once both nodes have joined."""
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
        "print(json.dumps([[n['NodeID'], n['Resources']] for n in ray.nodes() if n['Alive']]))\n"
    )
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        found = {
            key[4:]: node
            for node, resources in json.loads(out.strip().splitlines()[-1])
            for key in resources
            if key.startswith("dev:")
        }
        if {"alpha", "beta"} <= set(found) or time.monotonic() > deadline:
            assert {"alpha", "beta"} <= set(found), found
            assert found["alpha"] != found["beta"]
            return found
        time.sleep(1)


def _suite(folder: Path, tiny_onnx: Path, devices: list[str]) -> Path:
    (folder / "devices").mkdir(parents=True, exist_ok=True)
    for name in ("alpha", "beta"):
        (folder / "devices" / f"{name}.yaml").write_text(
            f"name: {name}\ndescription: fleet test device {name}\nkind: cpu\n"
            "transport: subprocess\n"
        )
    return write_suite(
        folder,
        f"""
        name: fleet
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32, dynamic_int8]
        backends: [onnxruntime]
        devices: [{", ".join(devices)}]
        {FAST_MEASUREMENT}
        accuracy: {{samples: 50}}
    """,
    )


def test_cells_run_on_the_node_holding_their_device(
    cluster: dict[str, Any], tmp_path: Path, tiny_onnx: Path
) -> None:
    suite = _suite(tmp_path, tiny_onnx, ["alpha", "beta"])
    store = tmp_path / "store"
    proc = run_qbench(
        "run",
        str(suite),
        "--store",
        str(store),
        "--no-report",
        "--json",
        "--executor",
        f"ray:{cluster['address']}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout holds the JSON document only
    assert doc["counts"] == {"ok": 4, "failed": 0, "timeout": 0, "skipped": 0}, doc

    results = pd.read_parquet(store / "results")
    assert len(results) == 4 and set(results.status) == {"ok"}
    spans: dict[str, list[tuple[datetime, datetime]]] = {"alpha": [], "beta": []}
    for row in results.itertuples():
        assert row.latency_p50_ms > 0
        matches = [m for m in map(NOTE.match, row.notes) if m]
        assert len(matches) == 1, row.notes
        node, start, end = matches[0].groups()
        assert node == cluster["node_of"][row.device], (row.cell_id, node, cluster["node_of"])
        spans[row.device].append((datetime.fromisoformat(start), datetime.fromisoformat(end)))
    for device, runs in spans.items():
        assert len(runs) == 2
        (s1, e1), (s2, e2) = sorted(runs)
        assert s1 < e1 <= s2 < e2, f"cells of {device} overlapped: {runs}"


def test_device_no_node_holds_fails_fast(
    cluster: dict[str, Any], tmp_path: Path, tiny_onnx: Path
) -> None:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "gamma.yaml").write_text(
        "name: gamma\ndescription: a device no node holds\nkind: cpu\ntransport: subprocess\n"
    )
    suite = _suite(tmp_path, tiny_onnx, ["alpha", "gamma"])
    store = tmp_path / "store"
    started = time.monotonic()
    proc = run_qbench(
        "run",
        str(suite),
        "--store",
        str(store),
        "--no-report",
        "--executor",
        f"ray:{cluster['address']}",
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qbench: error: --executor ray: no node of the Ray cluster holds")
    assert "dev:gamma (device gamma)" in lines[0]
    assert "device resources present: dev:alpha, dev:beta" in lines[0]
    assert proc.stdout == ""
    assert not store.exists()  # nothing ran, nothing was written
    assert time.monotonic() - started < 60


def test_executor_option_errors_are_one_line(tmp_path: Path, tiny_onnx: Path) -> None:
    suite = _suite(tmp_path, tiny_onnx, ["alpha"])
    (closed,) = _free_ports(1)  # nothing listens there: refused at once, not minutes of retries
    for spec, message in (
        ("pigeon", "unknown executor 'pigeon' (known: local, ray)"),
        (
            f"ray:127.0.0.1:{closed}",
            f"--executor ray: cannot reach the Ray cluster at 127.0.0.1:{closed}: "
            "Connection refused",
        ),
        ("local:somewhere", "--executor local:somewhere: executor local takes no address"),
        ("ray:", "--executor ray:: the address after ':' is empty"),
    ):
        proc = run_qbench("run", str(suite), "--no-report", "--executor", spec, timeout=120)
        assert proc.returncode == 2, (spec, proc.stderr)
        assert proc.stderr.strip() == f"qbench: error: {message}", proc.stderr


# slow: 11 s; tests/test_security.py checks the local transports in the default run
@pytest.mark.slow
def test_code_in_the_working_folder_never_runs_in_a_ray_task(
    cluster: dict[str, Any], tmp_path: Path, tiny_onnx: Path
) -> None:
    """Ray puts the driver's working folder first on its workers' sys.path: a pydantic.py
    where `qbench run` starts must still not run in the task (nor in the cell's stages)."""
    from tests.test_security import plant_shadow_modules, qbench_as_installed

    suite = _suite(tmp_path, tiny_onnx, ["alpha"])
    marker = tmp_path / "imported"
    plant_shadow_modules(tmp_path, marker, ("pydantic", "json", "runpy"))
    proc = qbench_as_installed("run", str(suite), "--store", str(tmp_path / "store"),
                               "--no-report", "--no-confirm", "--json", "--executor",
                               f"ray:{cluster['address']}", cwd=tmp_path)  # fmt: skip
    assert not marker.exists(), marker.read_text()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["ok"] == 2, proc.stdout
