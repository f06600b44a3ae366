"""Models: where an fp32 network and its weights come from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from qbench.inputs import InputSpec
from qbench.params import NoParams, Params


class LoadedModel:
    """An fp32 model ready to quantize: a torch module (eval mode), an ONNX or a .tflite file.

    A torch module may come as `load_module`, called on the first use of `.module`: the prepare
    stage of a cell whose artifact, inputs and reference outputs are all cached never uses the
    module, and building it (importing torch, reading the weights) was most of that stage's
    time (state_dict_file_model)."""

    def __init__(self, weights: str, sha256: str, module: Any = None,
                 onnx_path: Path | None = None, tflite_path: Path | None = None,
                 load_module: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self.weights = weights  # provenance of the weights, stored in every row
        self.sha256 = sha256  # hash of the fp32 weights (or of the ONNX file)
        self._module = module  # torch.nn.Module for torch-format models
        self._load_module = load_module
        self.onnx_path = onnx_path
        self.tflite_path = tflite_path

    @property
    def module(self) -> Any:
        if self._module is None and self._load_module is not None:
            self._module, self._load_module = self._load_module(), None
        return self._module

    @property
    def has_module(self) -> bool:
        """Whether there is a torch module, without building one."""
        return self._module is not None or self._load_module is not None


# What each native format is called in reasons ("model m is an ONNX file; ...").
FORMAT_NAMES = {"torch": "a torch module", "onnx": "an ONNX file", "tflite": "a .tflite file"}


def format_name(source: Any) -> str:
    """What a model's native format is called in reasons: 'an ONNX file'."""
    return FORMAT_NAMES.get(source.format, f"a {source.format} model")


def already_quantized(source: Any) -> str | None:
    """Why a model source bound to its parameters is already quantized, or None (also for a
    source not bound to any)."""
    params = getattr(source, "params", None)
    return source.quantized(params) if params is not None else None


class ModelSource:
    """Where a model comes from. An instance may be bound to its parameters (`bound`): the
    planner and the agent hand such an instance to methods, whose `unsupported` can then ask
    about the very file or module (its inputs, whether it is already quantized)."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    dataset: ClassVar[str]  # the dataset whose inputs this model takes
    format: ClassVar[str] = "torch"  # native format: "torch", "onnx" or "tflite"

    def __init__(self, params: Params | None = None) -> None:
        self.params = params

    @classmethod
    def bound(cls, raw: dict[str, Any]) -> ModelSource:
        """An instance bound to its parameters, validated from `raw`."""
        return cls(cls.Params(**raw))

    def dataset_for(self, params: Params) -> Any:
        """The dataset this model takes: a registered name, or {name, params}."""
        return self.dataset

    def inputs(self, params: Params) -> list[InputSpec] | None:
        """The model's declared inputs, or None where it takes its dataset's fields as they
        come (the built-in models: their dataset is made for them)."""
        return None

    def check(self, params: Params) -> None:
        """Plan-time checks of what `params` name (files, factories), cheap and before anything
        runs: raise CheckError(field, why)."""

    def default_label(self, params: Params) -> str:
        """The model's name in cell ids and rows where the suite gives no label: a model given
        by a file or a factory is named by it, so two of them never share cells."""
        return self.name

    def quantized(self, params: Params) -> str | None:
        """Why this model is already quantized (a .tflite with int8 weights), or None: methods
        that quantize need a float model."""
        return None

    def output_kind(self, params: Params) -> str:
        """What the first output is: "logits" (class scores: top-1 and agreement), "embedding"
        (vectors: cosine to fp32, and a linear probe where the dataset has labels) or
        "token_logits" (a causal LM: measured token by token, qbench.measure.llm)."""
        return "logits"

    def fixed_batch(self, params: Params) -> int | None:
        """The batch size the model's graph is fixed to, or None (any batch)."""
        return None

    def architecture(self, params: Params) -> Any:
        """A freshly built torch module with this model's structure (torch-format models)."""
        raise NotImplementedError(f"{self.name} has no torch architecture")

    def empty_architecture(self, params: Params) -> Any:
        """The architecture with its parameters on the meta device (no memory, no random
        init) for a backend that assigns every weight from a state dict, or None where the
        source cannot build one (the backend then builds `architecture`)."""
        return None

    def load(self, params: Params) -> LoadedModel:
        raise NotImplementedError


def reestimate_batchnorm(module: Any, inputs: Any, batch: int = 16) -> None:
    """Recompute BatchNorm running statistics from real inputs (cumulative average).

    A randomly initialised network's BN statistics do not match its activations; its outputs
    collapse towards zero and quantized outputs round to nothing (shared/facts.md).
    """
    import torch

    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all batches
    module.train()
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            module(torch.as_tensor(inputs[start : start + batch]))
    module.eval()


def state_dict_sha256(state_dict: dict[str, Any]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# The built-in models' architectures: their source is part of the key under which a weights
# file's state-dict hash is remembered (state_dict_file_model).
ARCHITECTURES_FILE = Path(__file__).with_name("_architectures.py")


def state_dict_file_model(weights: str, path: Path, architecture: Callable[[], Any]) -> LoadedModel:
    """A built-in torch model whose weights are the state-dict file `path`, loaded into
    `architecture()` (one of _architectures.py's) when the module is first used.

    Its sha256 is state_dict_sha256 of the loaded module, the value rows and the artifact cache
    have always keyed on; it is remembered in the cache per weights file, architectures source
    and torch version, so a cell whose artifact is cached names its model without importing
    torch."""
    import json
    from importlib import metadata

    from qbench.cache import cached_file, recorded_sha256
    from qbench.params import file_sha256

    built: list[Any] = []

    def load_module() -> Any:
        if not built:
            import torch

            module = architecture()
            module.load_state_dict(torch.load(path, weights_only=True), strict=True)
            built.append(module.eval())
        return built[0]

    def remember(tmp: Path) -> None:
        tmp.write_text(json.dumps({"sha256": state_dict_sha256(load_module().state_dict())}))

    # what the loaded state dict depends on: the file, the code that reads it into modules
    key = {"weights": recorded_sha256(path) or file_sha256(str(path), 64),
           "architectures": file_sha256(str(ARCHITECTURES_FILE), 64),
           "torch": metadata.version("torch"), "v": 1}  # fmt: skip
    entry = cached_file("model_sha", key, ".json", remember)
    sha = json.loads(entry.path.read_text())["sha256"]
    return LoadedModel(weights=weights, sha256=sha, load_module=load_module)
