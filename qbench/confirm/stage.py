"""The agent's `confirm` stage: two measured cells' artifacts opened in one process and timed
in interleaved rounds (measure.latency.interleaved_rounds), in the cell's own process as every
stage is, never in the CLI's.

Its input (the stage's JSON file): {"cells": [reference cell, candidate cell] as Cell JSON,
"prepared": [their prepare results], "rounds", "min_iters", "min_seconds"}; its output:
{"p50s": [reference's per-round medians, candidate's], load columns}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def open_runner(cell: Any, prepared: dict[str, Any]) -> Callable[[], Any]:
    """The timed call of a prepared cell: its backend's session bound to one batch of the
    cell's eval inputs, nothing else (files checked against prepare's hashes first)."""
    from qbench.cache import verify_file
    from qbench.inputs import InputSpec, batch_of, bind, load_npz
    from qbench.plugins import load_all, load_members

    for key, sha in (prepared.get("file_sha256") or {}).items():
        verify_file(Path(prepared[key]), sha)  # a file changed since prepare is never loaded
    fam = load_members(cell.members) if cell.members else load_all()
    backend = fam.backends.get(cell.backend)()
    session = backend.open(Path(prepared["artifact_path"]), cell.artifact_format, cell.threads,
                           backend.Params(**cell.backend_params))  # fmt: skip
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    x, _ = load_npz(prepared["eval_path"])
    return session.runner(batch_of(bind(spec, x), cell.batch))


def confirm(spec: dict[str, Any]) -> dict[str, Any]:
    from qbench.measure.latency import interleaved_rounds
    from qbench.measure.load import LoadWindow
    from qbench.plan import Cell

    cells = [Cell.from_json(c) for c in spec["cells"]]
    runners = {
        str(i): open_runner(cell, prepared)
        for i, (cell, prepared) in enumerate(zip(cells, spec["prepared"], strict=True))
    }
    with LoadWindow() as load:
        p50s = interleaved_rounds(
            runners, int(spec["rounds"]), int(spec["min_iters"]), float(spec["min_seconds"])
        )
    return {"p50s": [p50s[str(i)] for i in range(len(cells))], **load.columns()}
