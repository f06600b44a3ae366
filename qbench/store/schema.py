"""The store's tables and their columns (versioned).

Every row is a plain dict; these specs name each column, its Arrow type and what it means, so
the Parquet files read the same in pandas or duckdb without qbench. Bump SCHEMA_VERSION when a
column changes meaning or type; adding a nullable column does not need a bump.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1

STATUSES = ("ok", "failed", "timeout", "skipped")
EXECUTIONS = ("native", "simulated")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "string", "int64", "float64", "bool", "list<float64>", "list<string>", "timestamp"
    doc: str


RUN_COLUMNS: tuple[Column, ...] = (
    Column("schema_version", "int64", "version of this schema"),
    Column("run_id", "string", "unique id of the run (UTC time + random suffix)"),
    Column("suite", "string", "suite name"),
    Column("suite_path", "string", "suite file as given"),
    Column("suite_sha256", "string", "hash of the suite file's text"),
    Column("started_at", "timestamp", "UTC start of the run"),
    Column("finished_at", "timestamp", "UTC end of the run (empty if it was interrupted)"),
    Column("git_sha", "string", "qbench checkout's commit, with '+dirty' for local changes"),
    Column("host", "string", "host name"),
    Column("cpu_model", "string", "CPU model name"),
    Column("cpu_flags", "list<string>", "ISA flags that matter for quantized kernels"),
    Column(
        "onednn_isa",
        "string",
        "ISA oneDNN dispatches torch's CPU kernels to (its verbose isa line; names AMX)",
    ),
    Column("cores_logical", "int64", "logical CPUs"),
    Column("cores_physical", "int64", "physical cores"),
    Column("ram_gb", "float64", "total RAM, GiB"),
    Column("os", "string", "operating system and kernel"),
    Column("python", "string", "Python version"),
    Column("packages_json", "string", "JSON object: package -> version"),
    Column("cells_total", "int64", "cells in the plan (skipped included)"),
    Column("cells_excluded", "int64", "cells removed by the suite's include/exclude rules"),
    Column(
        "confirmations_json",
        "string",
        "JSON list: each summary pick of the run timed against its fp32 reference in "
        "interleaved rounds (median speed-up, its 95% interval, rounds, p-value, other load), "
        "or why it could not be",
    ),
)

RESULT_COLUMNS: tuple[Column, ...] = (
    Column("schema_version", "int64", "version of this schema"),
    Column("run_id", "string", "run this row belongs to"),
    Column("cell_id", "string", "stable id of the cell: model/method[params]/backend/device/b/t"),
    Column("suite", "string", "suite name"),
    Column("model", "string", "model name as registered"),
    Column("model_weights", "string", "where the weights came from"),
    Column("model_sha256", "string", "hash of the fp32 model's weights"),
    Column("method", "string", "quantization method"),
    Column("method_params_json", "string", "the method's full parameters, JSON, for reproduction"),
    Column("method_sha256", "string", "hash of method name + parameters"),
    Column("bits_w", "int64", "weight bits (32 for float32, 16 for fp16/bf16)"),
    Column("bits_a", "int64", "activation bits"),
    Column("granularity", "string", "weight quantization granularity: per_tensor|per_channel"),
    Column("calibrator", "string", "calibration method, where the method calibrates"),
    Column("symmetric_weights", "bool", "weights quantized symmetrically"),
    Column("act_dtype", "string", "activation element type at run time (float32, uint8, ...)"),
    Column("weight_dtype", "string", "weight element type stored (float32, int8, ...)"),
    Column("weight_scheme", "string", "uniform|fixed_point|log2|kmeans|product|binary|..."),
    Column("group_size", "int64", "weights per scale, with per-group granularity"),
    Column("percentile", "float64", "percentile kept, with the percentile calibrator"),
    Column("clusters", "int64", "centroids per codebook (k-means, product quantization)"),
    Column("subvector_size", "int64", "sub-vector length (product quantization)"),
    Column("qat_steps", "int64", "quantization-aware training steps"),
    Column("layer_bits_json", "string", "JSON: layer name -> weight bits (mixed precision)"),
    Column("backend", "string", "runtime that ran the cell"),
    Column("runtime_version", "string", "runtime package version"),
    Column("device", "string", "device name (devices/*.yaml)"),
    Column("device_kind", "string", "cpu|gpu|npu|tpu"),
    Column("transport", "string", "how the cell reached the device"),
    Column("remote_host", "string", "device reached by ssh/adb (user@host:port, adb:SERIAL)"),
    Column(
        "device_cpu_model",
        "string",
        "CPU model where the measure stage ran (the device itself over ssh/adb; empty when "
        "nothing read it: adb benchmark_model rows, stores before this column)",
    ),
    Column(
        "device_cpu_flags",
        "list<string>",
        "ISA flags that matter for quantized kernels, of the CPU where the measure stage ran; "
        "the report's hardware warning reads them before the run's host flags",
    ),
    Column(
        "onednn_isa",
        "string",
        "torch cells: ISA oneDNN dispatched to in the measure process (an `isa` cap applied)",
    ),
    Column(
        "onednn_kernels",
        "string",
        "torch cells: oneDNN primitives one inference executed, by implementation and count; "
        "openvino cells: the CPU plugin's compute layers by kernel (runtime graph)",
    ),
    Column(
        "compile_s",
        "float64",
        "seconds compiling for the measured batch's shapes, outside "
        "the timing (torch.compile's first call; OpenVINO with static shapes)",
    ),
    Column("copy_s", "float64", "seconds copying files to and from the device"),
    Column("executor_node", "string", "fleet executor: id of the node that ran the cell"),
    Column("executor_host", "string", "fleet executor: host name of that node"),
    Column("batch", "int64", "batch size"),
    Column("threads", "int64", "intra-op threads given to the runtime"),
    Column("status", "string", "ok|failed|timeout|skipped"),
    Column("error", "string", "why a cell failed, timed out or was skipped"),
    Column(
        "error_traceback",
        "string",
        "a failed cell's last lines of the failing stage's Python traceback (or of its stderr "
        "where the stage crashed without one)",
    ),
    Column("execution", "string", "native: integer/fp16 kernels ran; simulated: float kernels"),
    Column("artifact_format", "string", "format the backend loaded (onnx, torch, tflite, edgetpu)"),
    Column("artifact_bytes", "int64", "artifact size on disk"),
    Column(
        "packed_bytes",
        "int64",
        "methods that store quantized weights: the bytes the artifact's constants take at "
        "their stored types (read back); fake-quant (float on disk): theoretical size, bits x "
        "weights + codebooks + scales + zero points, other params fp32",
    ),
    Column("artifact_sha256", "string", "hash of the artifact"),
    Column("calib_sha256", "string", "hash of the calibration inputs (where used)"),
    Column("calib_samples", "int64", "calibration samples used"),
    Column("calib_outlier_fraction", "float64", "share of calibration inputs made outliers"),
    Column("quantized_nodes", "int64", "nodes running quantized kernels after optimisation"),
    Column(
        "quantized_tensors",
        "int64",
        "constants the artifact stores narrower than float32 (int8/uint8/int4/int16/float16...), "
        "read back from the file after it was built",
    ),
    Column("float_tensors", "int64", "constants the artifact stores as float32/float64"),
    Column(
        "model_macs",
        "int64",
        "multiply-accumulates of one fp32 inference (batch 1), from the ONNX graph",
    ),
    Column("compute_nodes", "int64", "compute nodes (Conv/MatMul/Gemm and quantized forms)"),
    Column("delegate", "string", "LiteRT: delegate that ran nodes (XNNPACK, EdgeTPU) or none"),
    Column("delegated_nodes", "int64", "LiteRT: model ops the delegate ran (of graph_nodes)"),
    Column("graph_nodes", "int64", "LiteRT: ops in the model (the rest ran on builtin kernels)"),
    Column("accelerator_nodes", "int64", "EdgeTPU: ops its compiler mapped to the accelerator"),
    Column("prepare_s", "float64", "seconds to build the artifact (0 when cached)"),
    Column("artifact_cached", "bool", "artifact came from the cache"),
    Column("load_s", "float64", "seconds to load the artifact into a session"),
    Column("warmup_iters", "int64", "untimed warm-up iterations"),
    Column("iters", "int64", "timed iterations"),
    Column("repeats", "int64", "timing rounds"),
    Column("latency_p50_ms", "float64", "median latency of one batch, ms"),
    Column("latency_p90_ms", "float64", "90th percentile latency, ms"),
    Column("latency_p99_ms", "float64", "99th percentile latency, ms"),
    Column("latency_mean_ms", "float64", "mean latency, ms"),
    Column("latency_std_ms", "float64", "standard deviation of latency, ms"),
    Column("latency_min_ms", "float64", "fastest iteration, ms"),
    Column("latency_ci_low_ms", "float64", "95% confidence interval of the median, low"),
    Column("latency_ci_high_ms", "float64", "95% confidence interval of the median, high"),
    Column("latency_repeat_p50s_ms", "list<float64>", "median of each timing round, ms"),
    Column("latency_samples_ms", "list<float64>", "raw latency samples, ms"),
    Column("throughput_ips", "float64", "inputs per second: batch / mean latency"),
    Column(
        "input_shapes_json",
        "string",
        "JSON object: model input name -> the shape it was fed at in the timed call (a batched "
        "input's axis 0 is the batch; a state or scalar input keeps its declared shape)",
    ),
    Column("peak_rss_mb", "float64", "peak resident memory of the cell's process (VmHWM), MiB"),
    Column(
        "load_other_cores",
        "float64",
        "CPUs' worth of time other processes and the hypervisor (steal) took while the cell was "
        "timed: (the machine's busy CPU time - the cell's own) / wall time, from /proc/stat",
    ),
    Column("load_steal_cores", "float64", "the hypervisor's share of load_other_cores (steal)"),
    Column("accuracy_dataset", "string", "dataset of the accuracy and fidelity inputs"),
    Column("accuracy_samples", "int64", "inputs evaluated"),
    Column("top1", "float64", "top-1 accuracy on labelled data, 0..1"),
    Column("top5", "float64", "top-5 accuracy (models with more than 5 classes), 0..1"),
    Column(
        "top1_ci_low",
        "float64",
        "95% interval of top1, low (inputs drawn together count as one: see accuracy_groups)",
    ),
    Column("top1_ci_high", "float64", "95% interval of top1, high"),
    Column(
        "top1_change",
        "float64",
        "paired change of top-1 against the fp32 reference on the same inputs (cell's top-1 "
        "minus fp32's), what the summary's top-1 budget judges",
    ),
    Column(
        "top1_change_ci_low",
        "float64",
        "95% interval of top1_change, low (paired: only inputs where the two differ move it)",
    ),
    Column("top1_change_ci_high", "float64", "95% interval of top1_change, high"),
    Column("fp32_agreement", "float64", "share of inputs whose top-1 class equals fp32's"),
    Column(
        "fp32_agreement_ci_low",
        "float64",
        "95% interval of fp32_agreement, low (inputs "
        "drawn together count as one: see accuracy_groups)",
    ),
    Column("fp32_agreement_ci_high", "float64", "95% interval of fp32_agreement, high"),
    Column(
        "accuracy_groups",
        "int64",
        "independent groups among the evaluation inputs (e.g. "
        "photos whose crops are evaluated); the intervals use the effective sample size",
    ),
    Column("output_cosine", "float64", "mean cosine similarity of outputs to fp32's"),
    Column(
        "output_cosine_p1",
        "float64",
        "1st percentile of the inputs' cosine similarity to fp32's outputs (the worst 1%)",
    ),
    Column("output_sqnr_db", "float64", "SQNR of outputs against fp32's, dB"),
    Column(
        "output_rel_rmse",
        "float64",
        "relative RMS error of outputs against fp32's over the evaluation set: "
        "||ref - test|| / ||ref|| (= 10^(-SQNR/20))",
    ),
    Column(
        "fp32_within_tol",
        "float64",
        "outputs of one value per input (regression, scores): share of inputs whose output is "
        "within fp32_tolerance of fp32's; judges them where argmax agreement cannot",
    ),
    Column(
        "fp32_within_tol_ci_low",
        "float64",
        "95% interval of fp32_within_tol, low (inputs drawn together count as one)",
    ),
    Column("fp32_within_tol_ci_high", "float64", "95% interval of fp32_within_tol, high"),
    Column(
        "fp32_tolerance",
        "float64",
        "the absolute tolerance of fp32_within_tol: 0.1 x the standard deviation of the fp32 "
        "outputs over the evaluation inputs",
    ),
    Column(
        "output_kind",
        "string",
        "what the model outputs: logits, embedding (cosine; top-1 through a linear probe) "
        "or token_logits (a causal LM: the LLM columns)",
    ),
    Column("prompt_tokens", "int64", "causal LM: prompt length decode starts from (tokens)"),
    Column(
        "ttft_ms",
        "float64",
        "causal LM: time to first token, ms: median prefill of prompt_tokens at batch 1",
    ),
    Column("prefill_tps", "float64", "causal LM: prefill tokens per second (prompt_tokens / ttft)"),
    Column("prefill_lengths", "list<int64>", "causal LM: prompt lengths whose prefill was timed"),
    Column(
        "prefill_p50s_ms",
        "list<float64>",
        "causal LM: median prefill time of each prompt length, ms",
    ),
    Column("decode_tokens", "int64", "causal LM: tokens generated per decode round"),
    Column(
        "decode_tps",
        "float64",
        "causal LM: decode tokens per second at batch 1 (1000 / mean per-token ms)",
    ),
    Column("decode_p50_ms", "float64", "causal LM: per-token decode latency, median, ms"),
    Column("decode_p90_ms", "float64", "causal LM: per-token decode latency, p90, ms"),
    Column("decode_p99_ms", "float64", "causal LM: per-token decode latency, p99, ms"),
    Column("perplexity", "float64", "causal LM: perplexity on the eval text windows"),
    Column("perplexity_fp32", "float64", "causal LM: the fp32 reference's perplexity there"),
    Column("perplexity_change", "float64", "causal LM: perplexity / perplexity_fp32 - 1"),
    Column("perplexity_tokens", "int64", "causal LM: positions the perplexity averages"),
    Column(
        "kld_mean", "float64", "causal LM: mean KL(P_fp32 || P) of next-token distributions, nats"
    ),
    Column("kld_p99", "float64", "causal LM: 99th percentile of that KL divergence, nats"),
    Column(
        "decode_kld_mean",
        "float64",
        "causal LM: mean KL divergence from fp32 when the first eval window is fed one token at "
        "a time through the KV cache (teacher-forced decode), nats",
    ),
    Column(
        "decode_fp32_agreement",
        "float64",
        "causal LM: top-1 agreement with fp32 in that token-by-token pass",
    ),
    Column("decode_quality_tokens", "int64", "causal LM: positions of that token-by-token pass"),
    Column(
        "power_source",
        "string",
        "power meter that measured (rapl, nvml, http, command) or tdp_estimate",
    ),
    Column(
        "power_provenance",
        "string",
        "measured | estimated | empty (see power_note); never "
        "compare a measured figure with an estimated one",
    ),
    Column("power_cadence_s", "float64", "seconds between meter reads"),
    Column("power_window_s", "float64", "seconds of the window the energy covers (timed loop)"),
    Column("power_samples", "int64", "meter reads in the window"),
    Column("idle_power_w", "float64", "idle baseline power measured just before, watts"),
    Column("active_power_w", "float64", "mean power over the timed window, watts"),
    Column(
        "energy_per_inference_mj",
        "float64",
        "(energy over the window - idle power x window) / inputs, millijoules per input",
    ),
    Column("power_note", "string", "sensor and method, or why the power columns are empty"),
    Column("notes", "list<string>", "why a figure is empty, and other provenance"),
    Column("started_at", "timestamp", "UTC start of the cell"),
    Column("duration_s", "float64", "wall seconds for the cell, prepare and measure"),
)

RESULT_COLUMN_NAMES = tuple(c.name for c in RESULT_COLUMNS)
RUN_COLUMN_NAMES = tuple(c.name for c in RUN_COLUMNS)
