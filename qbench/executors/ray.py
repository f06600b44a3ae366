"""Fleets: cells on a Ray cluster, each on a node that holds its device.

A node offers a device by holding the custom resource `dev:NAME` (NAME: the device file's
`name`), e.g. `ray start --address=HEAD:6379 --resources='{"dev:rpi5": 1}'` on the Raspberry Pi
or on the machine that reaches it. Every cell asks for one unit of its device's resource, so a
node started with `dev:NAME: 1` runs one cell of that device at a time (N units: N at once).
The Ray task runs the cell's transport on that node and returns the result; the host writes
the rows. Nodes need qbench (and the backends their cells use) importable by Ray's workers.

Where the cluster is (`--executor ray[:ADDRESS]`): ADDRESS (`HOST:PORT`, `ray://HOST:PORT`
or `auto`); without it RAY_ADDRESS, else a cluster already running on this machine, else a
local cluster started for the run whose resources are the plan's devices (one unit each).

`ray` is imported inside functions only, so `qbench --help` does not pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.executors.base import Executor
from qbench.executors.local import cell_workdir
from qbench.params import Params
from qbench.plan import Cell
from qbench.plugins import executors, load_all

RESOURCE_PREFIX = "dev:"
NOTE_PREFIX = "executor: ray node"


class FleetError(ValueError):
    """The cluster cannot run the plan (unreachable, or a device no node holds): exit 2."""


class RayParams(Params):
    address: str | None = Field(
        default=None,
        description="Ray cluster: HOST:PORT, ray://HOST:PORT or auto; unset: RAY_ADDRESS, else "
        "a cluster running here, else a local one holding the plan's devices",
    )


def device_resource(device: str) -> str:
    return f"{RESOURCE_PREFIX}{device}"


_connected_here = False  # this module called ray.init (and so calls ray.shutdown)
_driver_folder: Path | None = None  # the working folder ray.init saw (see _clean_folder)


def _clean_folder() -> Path:
    """A fresh folder holding only a link to this qbench package, the working folder while
    ray.init runs. Ray puts the driver's working folder first on every worker's sys.path, so a
    pydantic.py in the folder `qbench run` was started from ran inside every task; from this
    one the workers import the same qbench as this process (installed or not) and nothing
    else. Named like a run's work folder, so the one of a killed run is swept too."""
    import qbench
    from qbench.runner import WORKROOT_PREFIX

    folder = Path(tempfile.mkdtemp(prefix=f"{WORKROOT_PREFIX}{os.getpid()}-ray-"))
    (folder / "qbench").symlink_to(Path(qbench.__file__).resolve().parent)
    return folder


def _drop_clean_folder() -> None:
    global _driver_folder
    if _driver_folder is not None:
        shutil.rmtree(_driver_folder, ignore_errors=True)  # the link, not what it points to
        _driver_folder = None


def connect(params: RayParams, devices: list[str]) -> None:
    """Join the cluster once per process; later calls reuse the connection."""
    global _connected_here, _driver_folder
    import ray

    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    address = params.address or os.environ.get("RAY_ADDRESS")
    if address:
        _probe(address)
    _driver_folder = _clean_folder()
    try:
        with contextlib.chdir(_driver_folder):
            _init(ray, address, devices, quiet)
    except BaseException:
        _drop_clean_folder()
        raise
    _connected_here = True


def _init(ray: Any, address: str | None, devices: list[str], quiet: dict[str, Any]) -> None:
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                ray.init(
                    resources={device_resource(d): 1 for d in sorted(set(devices))},
                    include_dashboard=False,
                    **quiet,
                )
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FleetError(
            f"--executor ray: cannot reach the Ray cluster at {address}: {first}"
        ) from None


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds where HOST:PORT takes no connection (ray.init would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FleetError(
            f"--executor ray: cannot reach the Ray cluster at {address}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None


def disconnect() -> None:
    global _connected_here
    if _connected_here:
        import ray

        ray.shutdown()
        _connected_here = False
        _drop_clean_folder()


def check_devices(cells: list[Cell]) -> None:
    """Fail fast, in one line, when no node holds a device the plan runs cells on."""
    import ray

    present = ray.cluster_resources()
    wanted = sorted({c.device for c in cells})
    missing = [d for d in wanted if present.get(device_resource(d), 0) < 1]
    if missing:
        held = sorted(k for k in present if k.startswith(RESOURCE_PREFIX)) or ["none"]
        raise FleetError(
            f"--executor ray: no node of the Ray cluster holds "
            f"{', '.join(device_resource(d) for d in missing)} (device "
            f"{', '.join(missing)}); device resources present: {', '.join(held)}; start a node "
            f"with --resources='{{\"{device_resource(missing[0])}\": 1}}'"
        )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def run_on_node(cell_json: dict[str, Any]) -> dict[str, Any]:
    """The Ray task: run one cell through its transport on this node, in a node-local workdir."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    host = socket.gethostname()
    cell = Cell.from_json(cell_json)
    started = time.time()
    workroot = Path(tempfile.mkdtemp(prefix="qbench-ray-"))
    try:
        transport = load_all().transports.get(cell.transport)()
        tparams = transport.Params(**cell.transport_params)
        result = dict(transport.run_cell(cell, cell_workdir(workroot, 0, cell), tparams))
    except Exception as exc:  # the row says what broke; the run goes on
        result = {"status": "failed", "error": f"ray task: {type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    finished = time.time()
    result.update(
        executor_node=node,
        executor_host=host,
        executor_started_at=_iso(started),
        executor_finished_at=_iso(finished),
    )
    note = f"{NOTE_PREFIX} {node} on {host} ran the cell from {_iso(started)} to {_iso(finished)}"
    result["notes"] = [*(result.get("notes") or []), note]
    return result


def _failure(exc: BaseException) -> dict[str, Any]:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return {"status": "failed", "error": f"ray: {type(exc).__name__}: {lines[-1] if lines else ''}"}


@executors.register
class RayExecutor(Executor):
    name = "ray"
    description = "cells on a Ray cluster, each on a node holding dev:DEVICE, one per device unit"
    Params = RayParams

    def preflight(self, cells: list[Cell], params: Params) -> None:
        """Connect and check the devices before the run writes anything (the CLI calls it)."""
        assert isinstance(params, RayParams)
        connect(params, [c.device for c in cells])
        try:
            check_devices(cells)
        except FleetError:
            disconnect()
            raise

    def execute(
        self, cells: list[Cell], workroot: Path, params: Params
    ) -> Iterator[tuple[Cell, dict[str, Any]]]:
        import ray

        self.preflight(cells, params)
        task = ray.remote(run_on_node)
        pending: dict[Any, Cell] = {}
        try:
            for cell in cells:
                ref = task.options(
                    num_cpus=0,  # only the device resource limits how many run at once
                    resources={device_resource(cell.device): 1},
                    max_retries=0,  # a cell is measured once; a lost node is a failed row
                    name=f"qbench {cell.cell_id}"[:200],
                ).remote(cell.to_json())
                pending[ref] = cell
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:
                        result = _failure(exc)
                    yield cell, result
        finally:
            for ref in pending:
                ray.cancel(ref)
            disconnect()
