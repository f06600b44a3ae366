"""Your own model and data: ONNX files (Model Zoo style, several inputs), torch factories,
.tflite files (float and already quantized), image folders, arrays and synthetic inputs.

Every model and data file is built here (tests/own_models.py); nothing ships with qbench.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from qbench.inputs import InputSpec, bind, binding
from qbench.measure.fidelity import accuracy, fidelity, top1
from tests import own_models
from tests.conftest import FAST_MEASUREMENT, run_qbench, write_suite

IMAGES = "{name: image_folder, params: {path: images, resize: 16, crop: 16}}"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a user's models and data, as a suite beside them would name them."""
    folder = tmp_path_factory.mktemp("own")
    own_models.zoo_style_onnx(folder / "zoo.onnx")
    own_models.two_input_onnx(folder / "two.onnx")
    own_models.two_input_arrays(folder / "two.npz")
    own_models.factory_file(folder)
    own_models.small_net_weights(folder)
    own_models.image_folder(folder / "images")
    return folder


def _one_line_error(proc: object) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)  # type: ignore[attr-defined]
    err = proc.stderr.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# --- matching the data with the model's inputs ---------------------------------------------


def test_binding_by_name_by_position_and_channels_last() -> None:
    model = [InputSpec("features", (6,)), InputSpec("ids", (None,), "int64")]
    fields = [InputSpec("ids", (3,), "int64"), InputSpec("features", (6,)), InputSpec("y", (1,))]
    assert binding(model, fields) == {"features": ("features", False), "ids": ("ids", False)}
    # one input, one field: matched whatever the names (the built-in datasets say `input`)
    one = binding([InputSpec("data_0", (3, 16, 16))], [InputSpec("input", (3, 16, 16))])
    assert one == {"data_0": ("input", False)}
    # a channels-last model input takes NCHW photos transposed
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out = bind([InputSpec("img", (4, 5, 3))], {"input": x})
    np.testing.assert_array_equal(out["img"], x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"input\(s\) ids have no field of that name"):
        binding(model, [InputSpec("features", (6,)), InputSpec("tokens", (3,), "int64")])
    with pytest.raises(ValueError, match="does not fit model input data_0"):
        binding([InputSpec("data_0", (3, 16, 16))], [InputSpec("input", (3, 32, 32))])
    with pytest.raises(ValueError, match=r"is float; model input ids .* takes integers"):
        binding([InputSpec("ids", (3,), "int64")], [InputSpec("ids", (3,), "float32")])


# --- fidelity: ties, constant references, [N, C, 1, 1] outputs --------------------------------


def test_tied_and_constant_outputs_do_not_count_as_agreement() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 10)).astype(np.float32)
    notes: list[str] = []
    # an int8 model whose outputs all rounded to zero: argmax would say class 0 everywhere
    zeros = fidelity(reference, np.zeros_like(reference), notes=notes)
    assert zeros["fp32_agreement"] == 0.0 and zeros["output_sqnr_db"] == pytest.approx(0.0)
    assert any("40 input(s) with a tie at the top" in n for n in notes)
    # argmax picks the first of tied classes: a tie on the reference's class is no agreement
    tied = reference.copy()
    tied[:, 0] = tied[:, 1] = tied.max(axis=1) + 1
    assert fidelity(reference, tied)["fp32_agreement"] == 0.0
    # a constant reference (placeholder weights) leaves agreement empty, with the reason
    notes = []
    constant = np.tile(rng.normal(size=(1, 10)), (40, 1))
    out = fidelity(constant, constant, notes=notes)
    assert "fp32_agreement" not in out and out["output_sqnr_db"] == np.inf
    assert any("same output for every input" in n for n in notes)
    # reference rows with a tied top are left out of the count
    partly = reference.copy()
    partly[:5, :] = 1.0
    notes = []
    out = fidelity(partly, partly, notes=notes)
    assert out["fp32_agreement"] == 1.0 and any("leaves out 5 of 40" in n for n in notes)
    # top-1 accuracy: a tie is no prediction
    labels = np.zeros(40, np.int64)
    assert accuracy(np.zeros_like(reference), labels)["top1"] == 0.0


def test_outputs_shaped_n_c_1_1_are_compared_per_sample() -> None:
    rng = np.random.default_rng(1)
    flat = rng.normal(size=(12, 7)).astype(np.float32)
    nc11 = flat[:, :, None, None]
    assert np.array_equal(top1(nc11), flat.argmax(1))
    assert fidelity(nc11, nc11 * 1.01)["fp32_agreement"] == 1.0
    assert accuracy(nc11, flat.argmax(1))["top1"] == 1.0 and "top5" in accuracy(nc11, flat[:, 0])


# --- ONNX files: normalisation, sizes, artifacts that must load -------------------------------


def test_zoo_style_graph_is_normalised_and_computes_the_same(own: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from qbench.methods.export import normalize_onnx

    out = tmp_path / "normalised.onnx"
    notes = normalize_onnx(own / "zoo.onnx", out)
    assert any("4 initializer(s) listed as graph inputs (IR 3)" in n for n in notes)
    assert "opset 9 converted to 13 (onnx.version_converter)" in notes
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["data_0"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert "ConstantOfShape" not in {n.op_type for n in model.graph.node}  # folded
    x = np.random.default_rng(0).random((1, 3, 16, 16), np.float32)
    before = ort.InferenceSession(str(own / "zoo.onnx")).run(None, {"data_0": x})[0]
    after = ort.InferenceSession(str(out)).run(None, {"data_0": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_packed_bytes_count_weights_a_graph_computes(own: Path) -> None:
    from qbench.methods.packing import int8_weight_bits, packed_bytes_onnx, stored_bytes_onnx

    # conv1 8x3x3x3, its bias from ConstantOfShape (8), conv2 4x8x1x1 and its bias (4)
    floats = 8 * 3 * 3 * 3 + 8 + 4 * 8 + 4
    assert packed_bytes_onnx(own / "zoo.onnx", lambda *_: None) == floats * 4
    int8 = packed_bytes_onnx(own / "zoo.onnx", int8_weight_bits(8, True))
    assert int8 == 8 * 27 + 8 * 4 + 8 * 4 + 4 * 8 + 4 * 4 + 4 * 4  # weights + scales + biases
    assert stored_bytes_onnx(own / "zoo.onnx") == floats * 4 + 8  # and the int64 shape


def test_an_onnx_artifact_ort_cannot_load_is_refused(tmp_path: Path) -> None:
    """What quantize_static wrote for opset < 13 before the conversion: a per-channel
    DequantizeLinear `axis` that opset 10 does not have. prepare refuses such a file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from qbench.agent import _check_onnx_loads

    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)]
    graph = helper.make_graph(
        nodes,
        "bad",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [
            numpy_helper.from_array(np.zeros((2, 3), np.int8), "q"),
            numpy_helper.from_array(np.ones(2, np.float32), "s"),
            numpy_helper.from_array(np.zeros(2, np.int8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 5
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="static_int8 wrote an ONNX graph that ONNX Runtime "
                       "cannot load"):  # fmt: skip
        _check_onnx_loads(tmp_path / "bad.onnx", "static_int8")


def test_torch_weights_are_read_without_running_pickles(own: Path, tmp_path: Path) -> None:
    import torch

    from qbench.models.torch_module import read_state_dict

    safetensors, pt = own / "small_net.safetensors", own / "small_net.pt"
    a, b = read_state_dict(safetensors), read_state_dict(pt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(evil)


class _Payload:
    """An object a pickle would construct: weights_only loading refuses it."""


# --- data sources ---------------------------------------------------------------------------


def test_image_folder_labels_splits_and_preprocessing(own: Path, tmp_path: Path) -> None:
    from qbench.datasets.image_folder import ImageFolder, ImageFolderParams

    data = ImageFolder(ImageFolderParams(path=str(own / "images"), resize=16, crop=16))
    assert data.labelled and data.label == "image_folder:images"
    assert data.fields() == [InputSpec("input", (3, 16, 16))]
    x, y = data.load("eval", None)
    cx, cy = data.load("calib", None, seed=3)
    assert x.shape == (12, 3, 16, 16) and sorted(np.bincount(y)) == [3] * 4
    assert len(cx) == 12 and sorted(np.bincount(cy)) == [3] * 4
    assert not {a.tobytes() for a in x} & {a.tobytes() for a in cx}  # no image in both
    # ImageNet normalisation by default: a mid-grey pixel lands near zero
    assert -3 < float(x.mean()) < 3
    nhwc = ImageFolder(ImageFolderParams(path=str(own / "images"), resize=16, crop=16,
                                         layout="NHWC", channel_order="BGR"))  # fmt: skip
    np.testing.assert_allclose(
        nhwc.load("eval", 2)[0][..., ::-1].transpose(0, 3, 1, 2),
        ImageFolder(
            ImageFolderParams(path=str(own / "images"), resize=16, crop=16,
                              mean=[0.406, 0.456, 0.485], std=[0.225, 0.224, 0.229])
        ).load("eval", 2)[0],
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    # numeric class folders are the class indices; a labels CSV labels a flat folder
    numeric = tmp_path / "numeric"
    for k, src in enumerate(sorted((own / "images").iterdir())[:2]):
        (numeric / str(281 + k)).mkdir(parents=True)
        for img in sorted(src.iterdir())[:2]:
            (numeric / str(281 + k) / img.name).write_bytes(img.read_bytes())
    labels = ImageFolder(ImageFolderParams(path=str(numeric), resize=16, crop=16))
    assert set(labels.load("eval", None)[1]) == {281, 282}
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = ["file,label"]
    for k, img in enumerate(sorted((own / "images").rglob("*.png"))[:4]):
        (flat / img.name).write_bytes(img.read_bytes())
        rows.append(f"{img.name},{k % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    csv = ImageFolder(ImageFolderParams(path=str(flat), labels_csv=str(tmp_path / "labels.csv"),
                                        resize=16, crop=16))  # fmt: skip
    assert csv.labelled and sorted(csv.load("eval", None)[1]) == [0, 1]
    assert not ImageFolder(ImageFolderParams(path=str(flat), crop=16)).labelled


def test_arrays_and_synthetic_data(own: Path) -> None:
    from qbench.datasets.arrays import Arrays, ArraysParams
    from qbench.datasets.synthetic import Synthetic, SyntheticParams

    data = Arrays(ArraysParams(path=str(own / "two.npz")))
    assert data.labelled
    assert {f.name: f.shape for f in data.fields()} == {"features": (6,), "ids": (3,)}
    x, y = data.load("eval", None)
    cx, _ = data.load("calib", None)
    assert len(y) == 24 and len(cx["ids"]) == 24
    assert not {r.tobytes() for r in x["features"]} & {r.tobytes() for r in cx["features"]}
    model = [InputSpec("features", (6,)), InputSpec("ids", (None,), "int64")]
    noise = Synthetic(SyntheticParams(int_high=11, dynamic_size=5), model)
    assert not noise.labelled and not noise.measures_fidelity
    sx, sy = noise.load("eval", 8)
    assert sy is None and sx["ids"].shape == (8, 5) and sx["ids"].max() < 11
    assert sx["features"].dtype == np.float32
    assert not np.array_equal(noise.load("calib", 8)[0]["features"], sx["features"])


# --- plan time: one line naming the file and the field ----------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("{name: onnx_file, params: {path: nope.onnx}}",
         "models[0].params.path: {own}/nope.onnx: no such file"),
        ("{name: onnx_file, params: {path: images}}",
         "models[0].params.path: {own}/images: is a directory, expected an ONNX file"),
        ("{name: onnx_file, params: {path: garbage.onnx}}",
         "models[0].params.path: {own}/garbage.onnx: not an ONNX model"),
        ("{name: tflite_file, params: {path: zoo.tflite}}",
         "models[0].params.path: {own}/zoo.tflite: not a .tflite model"),
        ("{name: onnx_file, params: {path: zoo.txt}}",
         "models[0].params.path: {own}/zoo.txt: expected an ONNX file (.onnx), got '.txt'"),
        ("{name: torch_module, params: {factory: broken.py:build}}",
         "models[0].params.factory: {own}/broken.py: import failed (ModuleNotFoundError: No "
         "module named 'no_such_package')"),
        ("{name: torch_module, params: {factory: small_net.py:nothing}}",
         "models[0].params.factory: {own}/small_net.py has no function 'nothing'"),
        ("{name: torch_module, params: {factory: small_net.py}}",
         "models[0].params.factory: 'small_net.py': expected"),
        ("{name: onnx_file, params: {path: two.onnx, dataset: {name: arrays, params: "
         "{path: one.npz}}}}",
         "models[0].params.dataset: arrays: the model's input(s) features, ids have no field "
         "of that name in the data (data fields: input"),
        ("{name: onnx_file, params: {path: zoo.onnx, dataset: {name: image_folder, params: "
         "{path: images, crop: 32}}}}",
         "models[0].params.dataset: image_folder: data field input (float32 3x32x32) does not "
         "fit model input data_0 (float32 3x16x16)"),
        ("{name: onnx_file, params: {path: zoo.onnx, dataset: {name: image_folder, params: "
         "{path: images, resise: 16}}}}",
         "models[0].params.dataset.params.resise: unknown field"),
        ("{name: onnx_file, params: {path: zoo.onnx, dataset: {name: image_folder, params: "
         "{path: zoo.onnx}}}}",
         "models[0].params.dataset.params.path: {own}/zoo.onnx: is a file, expected a folder "
         "of images"),
        ("{name: onnx_file, params: {path: zoo.onnx, dataset: {name: imagefolder}}}",
         "models[0].params.dataset: unknown dataset 'imagefolder'"),
    ],
    ids=["missing", "directory", "not-onnx", "not-tflite", "suffix", "import-error",
         "no-function", "no-colon", "input-names", "input-shape", "unknown-preprocessing",
         "data-not-folder", "unknown-dataset"],
)  # fmt: skip
def test_bad_model_or_data_is_one_line_at_plan_time(own: Path, model: str, expected: str) -> None:
    (own / "garbage.onnx").write_bytes(b"\x00\x01 not protobuf \xff" * 10)
    (own / "zoo.tflite").write_bytes((own / "zoo.onnx").read_bytes())
    (own / "zoo.txt").write_text("x")
    (own / "broken.py").write_text("import no_such_package\n\ndef build():\n    pass\n")
    np.savez(own / "one.npz", input=np.zeros((4, 6), np.float32))
    suite = write_suite(own, f"""
        name: bad
        models: [{model}]
        methods: [fp32]
        output: {own}/store
    """, name="bad.yaml")  # fmt: skip
    err = _one_line_error(run_qbench("run", str(suite), "--dry-run"))
    assert err.startswith(f"qbench: error: {suite}:2: "), err
    assert expected.format(own=own) in err, err


def test_models_given_by_files_get_their_own_cells(own: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    own_models.zoo_style_onnx(other / "zoo.onnx", seed=5)
    own_models.zoo_style_onnx(tmp_path / "zoo_v2.onnx", seed=6)
    suite = write_suite(tmp_path, f"""
        name: two_files
        models:
          - {{name: onnx_file, params: {{path: {own}/zoo.onnx, dataset: synthetic}}}}
          - {{name: onnx_file, params: {{path: zoo_v2.onnx, dataset: synthetic}}}}
        methods: [fp32]
        scenario: {{batch: [1, 4]}}
    """)  # fmt: skip
    proc = run_qbench("run", str(suite), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "zoo/fp32/onnxruntime/local/b1/t1  run (onnx)" in proc.stdout
    assert "zoo_v2/fp32/onnxruntime/local/b1/t1  run (onnx)" in proc.stdout
    # the graph's batch is fixed to 1: batch 4 stays in the plan, skipped with the reason
    assert ("zoo/fp32/onnxruntime/local/b4/t1  skip: model zoo's graph takes a fixed batch of "
            "1; batch 4 cannot run") in proc.stdout  # fmt: skip
    # two files of one name in two folders would share cells: refused, unless labelled
    clash = write_suite(tmp_path, f"""
        name: clash
        models:
          - {{name: onnx_file, params: {{path: {own}/zoo.onnx, dataset: synthetic}}}}
          - {{name: onnx_file, params: {{path: {other}/zoo.onnx, dataset: synthetic}}}}
    """, name="clash.yaml")  # fmt: skip
    err = _one_line_error(run_qbench("run", str(clash), "--dry-run"))
    assert f"{clash}:4: models[1]: model label 'zoo' is also that of models[0]" in err
    labelled = write_suite(tmp_path, f"""
        name: labelled
        models:
          - {{name: onnx_file, params: {{path: {own}/zoo.onnx, dataset: synthetic}}}}
          - name: onnx_file
            label: zoo_other
            params: {{path: {other}/zoo.onnx, dataset: synthetic}}
    """, name="labelled.yaml")  # fmt: skip
    proc = run_qbench("run", str(labelled), "--dry-run")
    assert proc.returncode == 0 and "zoo_other/fp32" in proc.stdout, proc.stderr
    # the expansions of one entry are told apart by the values they took
    expanded = write_suite(tmp_path, """
        name: expanded
        models: [{name: digits_cnn, params: {epochs: [5, 15]}}]
    """, name="expanded.yaml")  # fmt: skip
    proc = run_qbench("run", str(expanded), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "digits_cnn[epochs=5]/fp32/" in proc.stdout
    assert "digits_cnn[epochs=15]/fp32/" in proc.stdout


def test_two_device_files_of_one_name_are_refused(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    for stem in ("board_a", "board_b"):
        (devices / f"{stem}.yaml").write_text("name: board\nkind: cpu\n")
    suite = write_suite(tmp_path, """
        name: boards
        models: [digits_cnn]
        devices: [board_a, board_b]
    """)  # fmt: skip
    err = _one_line_error(run_qbench("run", str(suite), "--dry-run"))
    assert f"{suite}:3: devices[1]: " in err and "names device 'board'" in err
    assert "give each device file its own `name`" in err


# --- end to end -------------------------------------------------------------------------------


def _rows(store: Path) -> dict[str, dict]:
    from qbench.store.parquet import load

    _, results = load(store)
    return {r["cell_id"]: r for r in results.to_dict("records")}


@pytest.mark.slow
def test_every_kind_of_model_runs_end_to_end(own: Path) -> None:
    """An opset-9 IR-3 fixed-batch ONNX file, a two-input ONNX file with integer inputs, a
    torch factory with safetensors weights, a float .tflite and an int8 one, on their data."""
    pytest.importorskip("ai_edge_litert")
    float_tflite, int8_tflite = own_models.small_tflite(own)
    suite = write_suite(own, f"""
        name: own
        models:
          - {{name: onnx_file, params: {{path: zoo.onnx, dataset: {IMAGES}}}}}
          - name: onnx_file
            params: {{path: two.onnx, dataset: {{name: arrays, params: {{path: two.npz}}}}}}
          - name: onnx_file
            label: two_noise
            params: {{path: two.onnx, dataset: {{name: synthetic, params: {{int_high: 11}}}}}}
          - name: torch_module
            params:
              factory: small_net.py:build
              weights: small_net.safetensors
              inputs: [{{name: x, shape: [3, 16, 16]}}]
              dataset: {IMAGES}
          - {{name: tflite_file, params: {{path: {float_tflite.name}, dataset: {IMAGES}}}}}
          - {{name: tflite_file, params: {{path: {int8_tflite.name}, dataset: {IMAGES}}}}}
        methods: [fp32, original, dynamic_int8, static_int8]
        backends: [onnxruntime, torch, litert]
        exclude:  # random inputs measure latency only: fp32 shows it
          - {{model: two_noise, method: [original, dynamic_int8, static_int8]}}
        {FAST_MEASUREMENT}
        calibration: {{samples: 8}}
        output: {own}/store
        report: {own}/own.html
    """, name="own.yaml")  # fmt: skip
    proc = run_qbench("run", str(suite), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"]["failed"] == doc["counts"]["timeout"] == 0, doc["rows"]
    rows = _rows(own / "store")
    ok = {k for k, r in rows.items() if r["status"] == "ok"}
    expected = {
        *(f"zoo/{m}/onnxruntime/local/b1/t1" for m in ("fp32", "original", "dynamic_int8",
                                                       "static_int8")),
        *(f"two/{m}/onnxruntime/local/b1/t1" for m in ("fp32", "dynamic_int8", "static_int8")),
        "two_noise/fp32/onnxruntime/local/b1/t1",
        *(f"small_net.build/{m}/{b}/local/b1/t1" for m in ("fp32", "dynamic_int8", "static_int8")
          for b in ("onnxruntime", "torch", "litert")),
        *(f"small_net/{m}/litert/local/b1/t1" for m in ("fp32", "original", "dynamic_int8",
                                                         "static_int8")),
        "small_net_int8/original/litert/local/b1/t1",
    }  # fmt: skip
    assert expected <= ok, sorted(expected - ok)

    # the Model Zoo-style graph: fed one sample at a time, its [N, C, 1, 1] output compared
    zoo = rows["zoo/static_int8/onnxruntime/local/b1/t1"]
    assert zoo["fp32_agreement"] > 0.8 and zoo["output_sqnr_db"] > 15
    assert zoo["quantized_nodes"] == zoo["compute_nodes"] == 2
    assert "opset 9 converted to 13 (onnx.version_converter)" in list(zoo["notes"])
    fp32 = rows["zoo/fp32/onnxruntime/local/b1/t1"]
    # packed_bytes read back from the QDQ graph: int8 weights, int32 biases and the scales and
    # zero points, which weigh a lot beside this graph's 260 parameters
    assert fp32["fp32_agreement"] == 1.0 and zoo["packed_bytes"] < fp32["packed_bytes"] / 2
    assert zoo["quantized_tensors"] > 0 and fp32["quantized_tensors"] == 0
    assert fp32["accuracy_dataset"] == "image_folder:images" and fp32["top1"] is not None
    # two inputs, one of them integer token ids, matched with the .npz fields by name
    two = rows["two/dynamic_int8/onnxruntime/local/b1/t1"]
    assert two["fp32_agreement"] > 0.8 and two["quantized_nodes"] >= 1
    assert two["accuracy_dataset"] == "arrays:two.npz" and 0 <= two["top1"] <= 1
    # synthetic inputs: latency only, accuracy and fidelity empty with the reason
    noise = rows["two_noise/fp32/onnxruntime/local/b1/t1"]
    assert noise["latency_p50_ms"] > 0 and np.isnan(noise["fp32_agreement"])
    assert np.isnan(noise["top1"])
    assert any("synthetic random inputs: latency only" in n for n in noise["notes"])
    # the torch factory: the same weights on all three runtimes
    for backend in ("onnxruntime", "torch", "litert"):
        row = rows[f"small_net.build/fp32/{backend}/local/b1/t1"]
        assert row["fp32_agreement"] == 1.0 and row["output_sqnr_db"] > 60, backend
    # an already-quantized .tflite: run as given, no float reference to compare with
    int8 = rows["small_net_int8/original/litert/local/b1/t1"]
    assert int8["quantized_nodes"] == 3 and np.isnan(int8["fp32_agreement"])
    assert any("already quantized" in n and "no float reference" in n for n in int8["notes"])
    assert "already quantized" in rows["small_net_int8/fp32/litert/local/b1/t1"]["error"]
    assert (own / "own.html").stat().st_size > 10_000


# slow: several real command-line runs (17 s)
@pytest.mark.slow
def test_run_a_model_without_a_suite(own: Path, tmp_path: Path) -> None:
    proc = run_qbench(
        "run", "--model", str(own / "zoo.onnx"), "--data", str(own / "images"),
        "--data-param", "resize=16", "--data-param", "crop=16",
        "--methods", "fp32,static_int8", "--backends", "onnxruntime",
        "--store", str(tmp_path / "store"), "--report", str(tmp_path / "zoo.html"), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["cell_id"] for r in doc["rows"]] == [
        "zoo/fp32/onnxruntime/local/b1/t1",
        "zoo/static_int8/onnxruntime/local/b1/t1",
    ]
    assert all(r["status"] == "ok" for r in doc["rows"]) and (tmp_path / "zoo.html").exists()
    from qbench.store.parquet import load

    runs, _ = load(tmp_path / "store")
    assert runs["suite"].tolist() == ["zoo"] and runs["suite_path"].tolist() == ["command line"]
    # a factory on the command line, with its inputs; mistakes name the flag
    proc = run_qbench(
        "run", "--model", f"{own}/small_net.py:build", "--input", "x:3x16x16",
        "--data", "synthetic", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "small_net.build/fp32/torch/local/b1/t1  run (torch)" in proc.stderr
    err = _one_line_error(run_qbench("run", "--model", str(own / "images"), cwd=tmp_path))
    assert f"qbench run: --model {own / 'images'}: is a directory" in err
    err = _one_line_error(run_qbench("run", "--model", str(own / "zoo.onnx"), "--data",
                                     str(own / "nothing"), cwd=tmp_path))  # fmt: skip
    assert "qbench run: --data: " in err and "no such folder or file" in err
    err = _one_line_error(run_qbench(
        "run", "--model", str(own / "zoo.onnx"), "--data", str(own / "images"),
        "--data-param", "crop=0", cwd=tmp_path))  # fmt: skip
    assert "qbench run: --data-param crop: " in err


def test_edgetpu_compiles_a_given_int8_tflite_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's already-quantized .tflite goes to edgetpu_compiler unchanged (no second
    quantization). The compiler here is a stand-in that copies its input and prints a log
    recorded from the real one: what this machine lacks is the compiler, not this path."""
    pytest.importorskip("ai_edge_litert")
    import sys

    from qbench.methods.base import MakeContext
    from qbench.methods.edgetpu import EdgeTpu, EdgeTpuParams
    from qbench.plugins import load_all

    _, int8 = own_models.small_tflite(tmp_path)
    log = Path(__file__).parent / "data" / "edgetpu" / "partial_yolov3tiny_15.0.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    compiler = bin_dir / "edgetpu_compiler"
    compiler.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\nfrom pathlib import Path\n"
        "args = sys.argv[1:]\nout, model = Path(args[args.index('-o') + 1]), Path(args[-1])\n"
        "shutil.copyfile(model, out / (model.stem + '_edgetpu.tflite'))\n"
        f"print(Path({str(log)!r}).read_text())\n"
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    source = load_all().models.get("tflite_file").bound({"path": str(int8)})
    method = EdgeTpu()
    assert method.unsupported("edgetpu", EdgeTpuParams(), source) is None
    static = load_all().methods.get("static_int8")()
    assert "already quantized" in static.unsupported("tflite", static.Params(), source)
    ctx = MakeContext(model_name="tflite_file", source=source, model_params=source.params,
                      model=source.load(source.params), input_shape=(16, 16, 3), calib=None,
                      fp32_onnx=None)  # fmt: skip
    out = tmp_path / "compiled.tflite"
    meta = method.make("edgetpu", EdgeTpuParams(), ctx, out)
    assert out.read_bytes() == int8.read_bytes()  # the stand-in copies what it was given
    assert "compiled the .tflite file as given" in meta["artifact_notes"]
    assert meta["accelerator_nodes"] == 2 and meta["graph_nodes"] == 36


def test_the_calibration_reader_counts_samples_of_the_batched_inputs() -> None:
    """A state input fixed at [2, 1, 8] is fed whole with each of the 5 samples; its first
    axis (2) is no sample count (issue 28: the reader counted from the first input)."""
    from qbench.inputs import fixed
    from qbench.methods._calibration import ArrayReader

    state = fixed(np.zeros((2, 1, 8)), "float32")
    reader = ArrayReader({"state": state, "x": np.arange(5 * 3, dtype=np.float32).reshape(5, 3)})
    fed = []
    while (item := reader.get_next()) is not None:
        fed.append(item)
    assert len(fed) == 5
    assert all(f["state"].shape == (2, 1, 8) and f["x"].shape == (1, 3) for f in fed)
    np.testing.assert_array_equal(fed[4]["x"], [[12, 13, 14]])
