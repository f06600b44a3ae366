"""torch.compile with inductor as qbench compiles: shared by the torch backend and the PT2E
int8 toolchain (qbench.methods._pt2e), which import it from here rather than from each other."""

from __future__ import annotations

import os
from typing import Any


def compile_module(module: Any) -> Any:
    """torch.compile with inductor, weights frozen (what lets inductor prepack oneDNN weights
    and lower PT2E's quantize/dequantize patterns to int8 kernels), compiled code cached under
    the qbench cache so the next process that compiles the same graph reuses it."""
    import torch

    from qbench.cache import cache_root

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    inductor_config.fx_graph_cache = True
    return torch.compile(module, dynamic=False)
