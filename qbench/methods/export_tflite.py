"""The fp32 LiteRT (.tflite) conversion shared by every LiteRT method, cached per model.

litert-torch converts the torch module (torch.export, then its own lowering) with a batch-1
example: the flatbuffer keeps the model's NCHW input (the converter puts one TRANSPOSE to NHWC
in front, everything else runs NHWC) and a fixed batch of 1. ONNX-file models have no torch
module and are not converted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qbench.cache import cached_file

BATCH = 1

# Loggers that print harmless import/conversion noise (torchao's missing CUDA kernels, torch's
# pytree deprecation, absl INFO lines).
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch._export", "torch.export", "absl",
                  "litert_torch", "jax")  # fmt: skip


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence LiteRT's tooling: progress bars off, Python warnings and noisy loggers muted,
    and the process's stderr (file descriptor 2, where the native interpreter and tqdm write)
    captured. What was captured is written back to stderr if the block raises."""
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if failed:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace")[-20000:])


def convert_tflite(module: Any, inputs: Any, out: Path) -> None:
    """Convert `module` (fp32, eval mode) to a LiteRT flatbuffer at `out`, batch 1, NCHW.
    `inputs`: the module's InputSpecs, or one sample shape of a one-input module."""
    from qbench.methods.export import _specs

    with quiet():
        import litert_torch
        import torch

        example = tuple(
            torch.zeros((BATCH, *(d or 1 for d in s.shape)), dtype=getattr(torch, s.dtype))
            for s in _specs(inputs)
        )
        edge = litert_torch.convert(module.eval(), example)
        edge.export(str(out))


def fp32_tflite(model_sha: str, module: Any, inputs: Any) -> Path:
    """Cached fp32 .tflite of a torch model (batch 1, NCHW input)."""
    from qbench.methods.export import _specs

    if module is None:
        raise ValueError("LiteRT artifacts are converted from torch modules; this model has none")
    specs = _specs(inputs)
    key: dict[str, Any] = {
        "model_sha": model_sha,
        "input_shape": list(specs[0].shape),
        "batch": BATCH,
        "litert_torch": package_version("litert-torch"),
        "v": 1,
    }
    if len(specs) > 1 or specs[0].dtype != "float32":  # the key of one float input is as before
        key["inputs"] = [s.to_json() for s in specs]
    path, _ = cached_file(
        "tflite_fp32", key, ".tflite", lambda tmp: convert_tflite(module, specs, tmp)
    )
    return path
