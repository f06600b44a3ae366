"""PyTorch on the CPU: fp32 and fp16/bf16 modules (oneDNN kernels: AMX where the CPU has it),
int8 PT2E programs compiled by inductor, and modules of torch's legacy x86 quantized engine;
eager, or compiled by inductor (`compile`), with oneDNN's ISA optionally capped (`isa`).

Artifacts are read with torch's weights-only unpickler: an artifact is a dict of plain values
and a state dict (tensors, quantized tensors, dtypes, qschemes: all in torch's default
weights-only set), so a file that would construct anything else, e.g. call os.system while it
is unpickled, is refused (UnsafeArtifactError) before any of it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.backends._inductor import compile_module
from qbench.backends._onednn import ISA_LEVELS, set_isa_cap
from qbench.backends.base import Backend, Session, first_output, torch_args
from qbench.formats.torch import weights_only_reason
from qbench.inputs import Inputs, InputSpec
from qbench.params import Params
from qbench.plugins import backends, methods, models

# What every artifact holds (qbench.methods.base.save_torch_artifact).
ARTIFACT_KEYS = ("model", "model_params", "method", "method_params", "state_dict")


class UnsafeArtifactError(ValueError):
    """A torch artifact that is not plain data (a pickle that would construct other objects or
    run code) or not a qbench artifact at all: refused, nothing of it was run. str(): one line."""


def load_artifact(artifact: Path) -> dict[str, Any]:
    """A torch artifact's dict, read weights-only (no pickled code runs), on the CPU."""
    import pickle

    import torch

    try:
        _register_torchao(artifact)
        saved = torch.load(artifact, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafeArtifactError(
            f"torch artifact {artifact} refused: it holds more than tensors and plain values "
            f"({weights_only_reason(exc)}); delete it so it is rebuilt"
        ) from exc
    if not isinstance(saved, dict):
        raise UnsafeArtifactError(
            f"torch artifact {artifact} is not a qbench artifact (holds a {type(saved).__name__})"
        )
    missing = [k for k in ARTIFACT_KEYS if k not in saved]
    if missing:
        raise UnsafeArtifactError(
            f"torch artifact {artifact} is not a qbench artifact (no {', '.join(missing)})"
        )
    return saved


def _register_torchao(artifact: Path) -> None:
    """torchao's quantized tensors (qbench.methods.torchao_quant) are safe for weights-only
    loads once torchao registers them, which importing it does: only then, and only for an
    artifact that names them (a torch cell without them never pays torchao's import)."""
    import torch

    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(artifact))
    except Exception:  # not a zip checkpoint: torch.load says what is wrong with it
        return
    if any(name.startswith("torchao.") for name in needed):
        import torchao.prototype.quantization.int4
        import torchao.quantization  # noqa: F401  registers its tensor subclasses as safe


class TorchParams(Params):
    channels_last: bool | None = Field(
        default=None,
        description="NHWC memory format (oneDNN's blocked NHWC kernels). None: on for fp16/bf16 "
        "models with convolutions that take 4-D inputs (bf16 ResNet-18 runs about 3x faster "
        "in it on AMX: the half-precision kernels want blocked layouts), off for fp32 (about "
        "15% faster in NHWC, but its outputs then differ from the NCHW reference by rounding: "
        "set true to measure it) and int8 FX modules",
    )
    compile: bool | None = Field(
        default=None,
        description="torch.compile the module with inductor (weights frozen into the graph, "
        "oneDNN kernels prepacked); the first call compiles (compile_s) and inductor's FX "
        "graph cache under the qbench cache makes later processes reuse the compiled code. "
        "None: only artifacts that need it (PT2E int8, which inductor lowers to int8 "
        "kernels; eager would run its quantize/dequantize pairs in float)",
    )
    slow_kernels: bool = Field(
        default=False,
        description="run fp16/bf16 cells on a CPU the probe finds without fp16/bf16 "
        "arithmetic (torch's CPU kernels then convert every element to float32: seconds per "
        "ResNet-18 image); False skips them with that reason",
    )
    isa: Literal[ISA_LEVELS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="cap oneDNN's instruction set (ONEDNN_MAX_CPU_ISA), e.g. avx512_core_bf16 "
        "to run the same cell without AMX: shows what AMX buys on this machine. oneDNN runs "
        "torch's convolutions and matmuls; ATen's own vector kernels are not capped. The row's "
        "onednn_isa and onednn_kernels say what oneDNN then used",
    )


def _is_quantized_compute(sub: Any) -> bool:
    cls = type(sub)
    # torchao keeps nn.Linear and swaps its weight for a quantized tensor subclass
    weight = getattr(sub, "weight", None)
    if weight is not None and type(weight).__module__.startswith("torchao"):
        return True
    # Quantized Linear holds a LinearPackedParams child: a container, not a second layer.
    return (
        ".quantized" in cls.__module__
        and cls.__name__.startswith(("Conv", "Linear"))
        and not cls.__name__.endswith("PackedParams")
    )


def count_torch_compute(module: Any) -> tuple[int, int]:
    """(quantized conv/linear modules, all conv/linear modules) of a module tree."""
    import torch

    quantized = compute = 0
    for sub in module.modules():
        if _is_quantized_compute(sub):
            quantized += 1
            compute += 1
        elif isinstance(sub, torch.nn.Conv2d | torch.nn.Linear):
            compute += 1
    return quantized, compute


class TorchSession(Session):
    """A module on the CPU. A compiled session compiles on the first call of runner() (not
    timed; compile_s) for that batch's shapes; predict() feeds batches of the same shape."""

    def __init__(
        self,
        module: Any,
        channels_last: bool,
        compiled: bool = False,
        counts: tuple[int, int] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        import torch

        self.module = module
        self.channels_last = channels_last
        self.compiled = compiled
        self.counts = counts
        self.notes = list(notes or [])
        self.compile_s: float | None = None
        self.last_args: list[Any] | None = None
        # fp16/bf16 modules take inputs of their own type; quantized ones take float32.
        self.dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()),
                          torch.float32)  # fmt: skip
        self.call = module

    def _args(self, x: Inputs) -> list[Any]:
        return torch_args(x, self.dtype, self.channels_last)

    def _first_call(self, args: list[Any]) -> None:
        """Compile now, outside any timing, and say whether inductor's cache served it."""

        import torch

        if not self.compiled or self.compile_s is not None:
            return
        from torch._dynamo.utils import counters

        before = dict(counters["inductor"])
        started = time.perf_counter()
        with torch.inference_mode():
            self.call(*args)
        self.compile_s = time.perf_counter() - started
        after = counters["inductor"]

        def grew(key: str) -> bool:
            return after.get(key, 0) > before.get(key, 0)

        if grew("fxgraph_cache_hit"):
            cache = "compiled graph from inductor's cache"
        elif grew("fxgraph_cache_bypass"):
            # int8 graphs hold oneDNN-packed weights, which the graph cache cannot pickle;
            # their C++ kernels still come from the on-disk code cache
            cache = ("graph cache bypassed (oneDNN-packed weights); C++ kernels an earlier "
                     "process compiled come from inductor's code cache")  # fmt: skip
        else:
            cache = "compiled (graph cache miss)"
        self.notes.append(
            f"torch.compile (inductor, frozen weights): first call {self.compile_s:.1f} s, " + cache
        )

    def runner(self, x: Inputs) -> Callable[[], Any]:
        import torch

        call, args = self.call, self._args(x)
        self._first_call(args)
        self.last_args = args

        def run() -> Any:
            with torch.inference_mode():
                return call(*args)

        return run

    def predict(self, x: Inputs) -> np.ndarray:
        import torch

        args = self._args(x)
        self._first_call(args)
        with torch.inference_mode():
            return first_output(self.call(*args)).float().numpy()

    def lm(self, capacity: int | None = None) -> TorchCausalLM:
        """The causal LM inside the module (hf_local's wrapper), token by token; `capacity`:
        the most tokens one sequence reaches (prompt and decode: a compiled session's static
        KV cache is that long)."""
        inner = getattr(self.module, "model", None)
        if inner is None or not hasattr(inner, "generation_config"):
            raise ValueError("this torch module is not a transformers causal LM (hf_local)")
        # the wrapper's forward is not what a causal LM runs: inspect()'s oneDNN pass runs it
        # eager, as the prefill does (TorchCausalLM compiles the decode step itself)
        self.call = self.module
        return TorchCausalLM(inner, self, capacity)

    def inspect(self) -> dict[str, Any]:
        import torch

        from qbench.backends._onednn import (
            kernel_summary,
            kernels_from_verbose,
            observed_isa,
            verbose_text,
        )

        quantized, compute = self.counts or count_torch_compute(self.module)
        row: dict[str, Any] = {"quantized_nodes": quantized, "compute_nodes": compute}
        notes = list(self.notes)
        if self.last_args is not None and torch.backends.mkldnn.is_available():
            args = self.last_args

            def once() -> None:
                with torch.inference_mode():
                    self.call(*args)

            kernels = kernels_from_verbose(verbose_text(once))
            if kernels:
                row["onednn_kernels"] = kernel_summary(kernels, limit=12)
            else:
                notes.append("oneDNN ran no primitive for this model (ATen or other kernels)")
            row["onednn_isa"] = observed_isa()
        if self.compile_s is not None:
            row["compile_s"] = self.compile_s
        row["notes"] = notes
        return row


class TorchCausalLM:
    """Prefill, KV-cache decode and log-probabilities of a transformers causal LM (greedy),
    for qbench.measure.llm. Eager: a dynamic cache grown per step. Compiled (the backend's
    `compile: true`): a static cache of `capacity` tokens and a compiled decode step, the
    form in which torch.compile speeds decode up (one graph, no recompiles: a dynamic cache
    changes shape every step); the prefill that fills it stays eager (one compiled graph per
    prompt length would cost minutes), which the row's notes say. The last prefill's inputs
    are kept for inspect()'s oneDNN pass."""

    def __init__(self, model: Any, session: TorchSession, capacity: int | None = None) -> None:
        import inspect

        self.model = model
        self.session = session
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.static = None
        self.step = model
        if session.compiled and capacity:
            from transformers import StaticCache

            self.static = StaticCache(config=model.config, max_cache_len=capacity)
            self.step = compile_module(model)
            session.notes.append(
                f"causal LM compiled for decode (static KV cache of {capacity} tokens); "
                "prefill runs eager"
            )

    def _cache(self, out: Any) -> Any:
        # the output names the cache as the forward's argument does (cache, or past_key_values)
        cache = getattr(out, self.cache_arg, None)
        return out.past_key_values if cache is None else cache

    def prefill(self, ids: np.ndarray) -> tuple[int, Any]:
        import torch

        args = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))[None]
        with torch.inference_mode():
            if self.static is not None:
                self.static.reset()
                out = self.model(input_ids=args, use_cache=True, logits_to_keep=1,
                                 **{self.cache_arg: self.static})  # fmt: skip
                state = (self.static, args.shape[1])
            else:
                out = self.model(input_ids=args, use_cache=True, logits_to_keep=1)
                state = (self._cache(out), args.shape[1])
        self.session.last_args = [args]
        return int(out.logits[0, -1].argmax()), state

    def decode(self, token: int, state: Any) -> tuple[int, Any]:
        logits, state = self._step(token, state)
        return int(logits.argmax()), state

    def decode_logprobs(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        import torch

        logits, state = self._step(token, state)
        return torch.log_softmax(logits.float(), dim=-1).numpy(), state

    def _step(self, token: int, state: Any) -> tuple[Any, Any]:
        """One decode step: the next-token logits [vocab] and the new state."""
        import torch

        cache, position = state
        first = self.static is not None and self.session.compile_s is None
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.step(input_ids=torch.tensor([[token]]),
                            position_ids=torch.tensor([[position]]), use_cache=True,
                            **{self.cache_arg: cache})  # fmt: skip
        if first:  # the compiling call: the row's compile_s
            self.session.compile_s = time.perf_counter() - started
        if self.static is None:
            cache = self._cache(out)
        return out.logits[0, -1], (cache, position + 1)

    def logprobs(self, ids: np.ndarray) -> np.ndarray:
        import torch

        args = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))[None]
        with torch.inference_mode():
            logits = self.model(input_ids=args, use_cache=False).logits[0].float()
            return torch.log_softmax(logits, dim=-1).numpy()


def _half_cnn(module: Any, saved: dict[str, Any]) -> bool:
    """A fp16/bf16 module with convolutions that takes 4-D inputs: channels_last's case."""
    import torch

    half = any(p.dtype in (torch.float16, torch.bfloat16) for p in module.parameters())
    specs = [InputSpec.from_json(s) for s in saved.get("inputs") or []]
    four_d = any(len(s.shape) == 3 for s in specs) if specs else len(saved["input_shape"]) == 3
    return half and four_d and any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def example_args(saved: dict[str, Any]) -> Any:
    """A batch-1 example of a saved torch artifact's inputs (what rebuild_torch traces): one
    tensor for a one-input model, a tuple for several."""
    import torch

    specs = [InputSpec.from_json(s) for s in saved.get("inputs") or []]
    if not specs:
        return torch.zeros((1, *saved["input_shape"]))
    tensors = tuple(
        torch.zeros((1, *(d or 1 for d in s.shape)), dtype=getattr(torch, s.dtype)) for s in specs
    )
    return tensors[0] if len(tensors) == 1 else tensors


@backends.register
class TorchEagerBackend(Backend):
    name = "torch"
    description = (
        "PyTorch on the CPU, eager or torch.compile (inductor): fp32, bf16/fp16 (oneDNN, AMX "
        "where present), int8 (PT2E through inductor, or the legacy x86 engine)"
    )
    Params = TorchParams
    loads = ("torch",)
    requires = ("torch",)
    generates = True

    def version(self) -> str:
        import torch

        return torch.__version__

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, TorchParams)
        # before anything creates a oneDNN primitive in this process: oneDNN reads it once
        set_isa_cap(params.isa)
        import torch

        torch.set_num_threads(threads)
        saved = load_artifact(artifact)
        notes = [f"oneDNN ISA capped at {params.isa}"] if params.isa else []
        if "exported" in saved:  # a PT2E program (static_int8 torch_flow=pt2e): see refuses
            from qbench.methods._pt2e import compile_int8, count_pt2e_compute, load_exported

            module = load_exported(saved["exported"])
            counts = count_pt2e_compute(module)
            return TorchSession(compile_int8(module), False, True, counts, notes)
        source = models.get(saved["model"])()
        method = methods.get(saved["method"])()
        model_params = source.Params(**saved["model_params"])
        module = source.empty_architecture(model_params) if method.loads_by_assignment else None
        if module is None:
            module = source.architecture(model_params)
        module = method.rebuild_torch(module, example_args(saved),
                                      method.Params(**saved["method_params"]))  # fmt: skip
        state = saved["state_dict"]
        # torchao's quantized tensors (tensor subclasses) take the plain Linear's place by
        # assignment; so do all tensors of a float model (no second copy of the weights)
        assign = not any(_is_quantized_compute(m) for m in module.modules())
        module.load_state_dict(state, assign=assign)
        module.eval()
        quantized = any(_is_quantized_compute(m) for m in module.modules())
        wanted = params.channels_last
        channels_last = not quantized and (_half_cnn(module, saved) if wanted is None else wanted)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
            if wanted is None:
                notes.append("channels_last (NHWC) memory format: a half-precision CNN")
        counts = count_torch_compute(module)
        session = TorchSession(module, channels_last, params.compile, counts, notes)
        if params.compile:
            session.call = compile_module(module)
        return session

    def refuses(
        self, method: str, method_params: Params, fmt: str, params: Params, cpu_flags: list[str]
    ) -> str | None:
        from qbench.probe import kernel_readiness

        assert isinstance(params, TorchParams)
        if is_pt2e(method, method_params) and params.compile is False:
            return (
                "torchao PT2E int8 runs through inductor (eager would run its "
                "quantize/dequantize pairs in float32): leave compile unset or true"
            )
        if method in ("fp16", "bf16") and cpu_flags and not params.slow_kernels:
            why = kernel_readiness(cpu_flags)[method]
            if why:
                return (f"this CPU has {why} (probe): torch's {method} CPU kernels convert every "
                        "element to float32, seconds per ResNet-18 image; backend parameter "
                        "slow_kernels: true runs it anyway")  # fmt: skip
        return None


def is_pt2e(method: str, method_params: Params) -> bool:
    """Whether the method builds a PT2E program (torch.export) rather than a module."""
    return method == "static_int8" and getattr(method_params, "torch_flow", None) == "pt2e"
