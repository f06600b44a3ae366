"""Backends: runtimes that load an artifact and run it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qbench.inputs import Inputs, as_inputs
from qbench.params import NoParams, Params


class Session:
    """A loaded artifact. `runner` binds one batch so the timed call does nothing else.

    Batches are named inputs (qbench.inputs.Inputs), keyed and ordered as the model's inputs;
    a session maps them to its runtime's inputs by name, else by position."""

    def runner(self, x: Inputs) -> Callable[[], Any]:
        raise NotImplementedError

    def predict(self, x: Inputs) -> np.ndarray | None:
        """float32 outputs (the model's first output) for a batch of inputs; None from a
        session that computes nothing (the null backend), whose accuracy columns then stay
        empty."""
        raise NotImplementedError

    def inspect(self) -> dict[str, Any]:
        """Row fields describing what really runs (quantized_nodes, compute_nodes, notes)."""
        return {}


class Backend:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    loads: ClassVar[tuple[str, ...]]  # artifact formats
    # Runs causal LMs token by token (prefill, KV-cache decode: qbench.measure.llm); a backend
    # without it is skipped for them with the reason.
    generates: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]]  # importable modules this backend needs

    def missing_packages(self) -> list[str]:
        return [m for m in self.requires if find_spec(m) is None]

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this host (a missing package, library or device),
        or None. Called while planning, so it must be cheap; cells get it as their skip
        reason."""
        missing = self.missing_packages()
        if missing:
            return f"needs Python package(s) {', '.join(missing)}, not installed"
        return None

    def refuses(
        self, method: str, method_params: Params, fmt: str, params: Params, cpu_flags: list[str]
    ) -> str | None:
        """Why this backend will not run `method`'s artifact of format `fmt` with these
        parameters on a device with these CPU ISA flags ([] where unknown), or None. Asked at
        plan time, after the method said it can build the artifact: a runtime that lacks an
        operator, or kernels this CPU would run pathologically slowly (the probe's readiness),
        skip the cell with the reason instead of failing or timing it out."""
        return None

    def version(self) -> str:
        raise NotImplementedError

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        raise NotImplementedError


def feed_by_name(names: list[str], x: Inputs | np.ndarray) -> dict[str, np.ndarray]:
    """`x` keyed by the runtime's input names: by name where they all match, else by position
    (an exported graph may rename an input: torch's `input` is another runtime's `args_0`).
    A bare array is a one-input batch."""
    x = as_inputs(x)
    if set(names) == set(x):
        return {name: x[name] for name in names}
    if len(names) != len(x):
        raise ValueError(
            f"the artifact takes {len(names)} input(s) ({', '.join(names)}), the data gives "
            f"{len(x)} ({', '.join(x)})"
        )
    return dict(zip(names, x.values(), strict=True))


def torch_args(
    x: Inputs | np.ndarray, dtype: Any, channels_last: bool = False, device: Any = None
) -> list[Any]:
    """The module's positional arguments: float inputs cast to the module's float type (fp16,
    bf16), integer inputs (token ids, masks) kept; 4-D ones channels-last where asked. A bare
    array is a one-input batch."""
    import torch

    args = []
    for value in as_inputs(x).values():
        # asarray(order=C), not ascontiguousarray: that makes a scalar input 1-d
        t = torch.from_numpy(np.asarray(value, order="C"))
        if t.is_floating_point():
            t = t.to(dtype)
        if device is not None:
            t = t.to(device)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        args.append(t)
    return args


def first_output(out: Any) -> Any:
    """A module's first output: a tensor, or the first of a tuple / list / dict of them."""
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, tuple | list):
        return out[0]
    return out
