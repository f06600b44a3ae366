"""A transformers causal LM as one ONNX graph with a KV cache: the form ONNX Runtime runs a
prompt and then tokens one at a time (what onnxruntime-genai and Optimum export).

Inputs:  input_ids [1, S] int64; logit_positions [K] int64 (which of the S positions get
         logits: the last one for prefill and decode, all of them for perplexity);
         past_key_{i}, past_value_{i} [1, kv_heads, P, head_dim] float32 for each layer.
Outputs: logits [1, K, vocab]; present_key_{i}, present_value_{i} [1, kv_heads, P+S, head_dim].

One graph serves prefill (P = 0), decode (S = 1) and whole windows (P = 0, K = S), so every
ONNX method quantizes the graph ORT really generates with. Positions are P..P+S-1, taken from
the past's length inside the graph, and the attention is causal (batch 1, no padding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Bumped when the graph's inputs or outputs change: part of the fp32 export's cache key.
GRAPH_VERSION = 1


def cache_shape(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a causal LM config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def past_names(layers: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(layers) for kv in ("key", "value")]


def _decoder(model: Any) -> Any:
    """`model` (a transformers causal LM) with flat tensors in and out, as ONNX needs."""
    import torch
    from transformers import DynamicCache

    layers = cache_shape(model.config)[0]

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, logit_positions: Any, *past: Any) -> tuple[Any, ...]:
            pairs = [(past[2 * i], past[2 * i + 1]) for i in range(layers)]
            cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
            out = self.model(
                input_ids=input_ids, use_cache=True, logits_to_keep=logit_positions, cache=cache
            )
            # transformers 5 names the returned cache as the argument (cache)
            present = getattr(out, "cache", None) or out.past_key_values
            flat = [t for layer in present.layers for t in (layer.keys, layer.values)]
            return (out.logits, *flat)

    return Decoder().eval()


def export_causal_lm(model: Any, out: Path) -> None:
    """Export `model` (float, on the CPU) to `out`, weights inside the file, then ORT's
    pre-processing (shape inference, constant folding) that its quantizers expect."""
    import torch

    from qbench.methods.onnx_dynamo import dynamo_export

    layers, kv_heads, head_dim = cache_shape(model.config)
    # example sizes above 1 (torch.export specializes sizes 0 and 1); the ranges include 0
    # past positions (prefill) and 1 new token (decode)
    seq = torch.export.Dim("sequence", min=1, max=65536)
    past_len = torch.export.Dim("past", min=0, max=65536)
    kept = torch.export.Dim("kept", min=1, max=65536)
    ids = torch.zeros((1, 5), dtype=torch.int64)
    positions = torch.arange(3, dtype=torch.int64) + 2
    past = tuple(torch.zeros((1, kv_heads, 7, head_dim)) for _ in range(2 * layers))
    dynamo_export(
        _decoder(model),
        (ids, positions, *past),
        out,
        ["input_ids", "logit_positions", *past_names(layers)],
        ["logits", *present_names(layers)],
        ({1: seq}, {0: kept}, tuple({2: past_len} for _ in past)),
    )
