"""Small models and data of the kinds users bring, built by the tests themselves.

- an ONNX Model Zoo-style graph: opset 9, IR 3 (initializers listed as graph inputs), a fixed
  batch of 1, an input named `data_0`, a bias computed by ConstantOfShape, and an output shaped
  [N, C, 1, 1] as DenseNet's and SqueezeNet's are;
- a two-input ONNX graph with a float input and an integer (token id) input of dynamic length;
- a torch factory module in a file of its own, with weights as .safetensors and .pt;
- a .tflite converted from a torch module (litert-torch), and one quantized by ai-edge-quantizer;
- an image folder of real photo crops (scikit-image), one sub-folder per class.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

SIZE = 16  # the small models take 3 x 16 x 16 images
CLASSES = 4


def zoo_style_onnx(path: Path, seed: int = 0) -> Path:
    """Conv -> Relu -> Conv(1x1) -> GlobalAveragePool: logits [1, CLASSES, 1, 1], opset 9."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.4, (CLASSES, 8, 1, 1)).astype(np.float32)
    b2 = rng.normal(0, 0.1, CLASSES).astype(np.float32)
    shape = np.array([8], np.int64)  # the first conv's bias: ConstantOfShape(value 0.05)
    inits = [
        numpy_helper.from_array(w1, "conv1_w_0"),
        numpy_helper.from_array(shape, "conv1_b_0__SHAPE"),
        numpy_helper.from_array(w2, "conv2_w_0"),
        numpy_helper.from_array(b2, "conv2_b_0"),
    ]
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["conv1_b_0__SHAPE"],
            ["conv1_b_0"],
            value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.05]),
        ),
        helper.make_node("Conv", ["data_0", "conv1_w_0", "conv1_b_0"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2_w_0", "conv2_b_0"], ["c2"]),
        helper.make_node("GlobalAveragePool", ["c2"], ["prob_1"]),
    ]
    # IR 3: every initializer is listed as a graph input as well
    listed = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = helper.make_graph(
        nodes,
        "zoo_style",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, SIZE, SIZE]), *listed],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, CLASSES, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    onnx.save(model, path)
    return path


def two_input_onnx(path: Path, seed: int = 0) -> Path:
    """logits = features @ W + sum over tokens of E[ids]: a float input [N, 6] and an int64 input
    [N, seq] (seq dynamic), 5 classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1.0, (6, 5)).astype(np.float32)
    emb = rng.normal(0, 1.0, (11, 5)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["dense"]),
        helper.make_node("Gather", ["emb", "ids"], ["tokens"], axis=0),
        helper.make_node("ReduceSum", ["tokens", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Add", ["dense", "pooled"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 6]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(emb, "emb"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def two_input_arrays(path: Path, n: int = 48, seed: int = 1) -> Path:
    """Inputs for two_input_onnx (fields named as its inputs) with labels: the fp32 model's
    own top-1 on most samples, so top-1 means something."""
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 1.0, (n, 6)).astype(np.float32)
    ids = rng.integers(0, 11, (n, 3)).astype(np.int64)
    labels = rng.integers(0, 5, n)
    np.savez(path, features=features, ids=ids, labels=labels)
    return path


FACTORY = """
import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(16, {classes})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def build() -> nn.Module:
    torch.manual_seed(123)
    return SmallNet()
"""


def factory_file(folder: Path) -> Path:
    """A module file defining build() -> SmallNet (3 x SIZE x SIZE images, CLASSES classes)."""
    path = folder / "small_net.py"
    path.write_text(textwrap.dedent(FACTORY.format(classes=CLASSES)))
    return path


def small_net_weights(folder: Path, seed: int = 7) -> tuple[Path, Path]:
    """Weights for SmallNet other than build()'s own: as .safetensors and as a .pt state dict."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("small_net_for_weights", factory_file(folder))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    net = module.SmallNet()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "small_net.safetensors"))
    torch.save(state, folder / "small_net.pt")
    return folder / "small_net.safetensors", folder / "small_net.pt"


def small_tflite(folder: Path) -> tuple[Path, Path]:
    """(float .tflite, int8-weight .tflite) of SmallNet: litert-torch, then ai-edge-quantizer."""
    import importlib.util

    from qbench.methods._litert_quant import dynamic_range
    from qbench.methods.export_tflite import convert_tflite

    spec = importlib.util.spec_from_file_location("small_net_for_tflite", factory_file(folder))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    float_path, int8_path = folder / "small_net.tflite", folder / "small_net_int8.tflite"
    convert_tflite(module.build(), (3, SIZE, SIZE), float_path)
    dynamic_range(float_path, int8_path, bits=8)
    return float_path, int8_path


def image_folder(folder: Path, per_class: int = 6) -> Path:
    """Real photo crops (scikit-image), one sub-folder per class, a class per photo."""
    import skimage.data
    from PIL import Image

    photos = ("astronaut", "chelsea", "coffee", "rocket")[:CLASSES]
    rng = np.random.default_rng(0)
    for label, name in enumerate(photos):
        img = getattr(skimage.data, name)()
        target = folder / f"class_{label}_{name}"
        target.mkdir(parents=True, exist_ok=True)
        h, w = img.shape[:2]
        for k in range(per_class):
            side = int(min(h, w) * rng.uniform(0.4, 0.8))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(img[y : y + side, x : x + side, :3])
            crop.resize((24, 24)).save(target / f"{name}_{k}.png")
    return folder


IMAGE_PARAMS = {"resize": SIZE, "crop": SIZE}  # image_folder preprocessing for these models


UNSIGNED_NET = '''
import torch


class ConvFc(torch.nn.Module):
    """Two convolutions and two fully-connected layers, as small speech/OCR heads have."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.fc1 = torch.nn.Linear(32 * 8 * 8, 64)
        self.fc2 = torch.nn.Linear(64, 4)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))
'''


def unsigned_tflite(folder: Path, legacy: bool = True) -> Path:
    """A float .tflite (conv + fully-connected, 3 x 16 x 16 input) as older TensorFlow
    converters wrote them: no SignatureDef and, with `legacy`, each op's code only in
    the pre-3a `deprecated_builtin_code` field (litert-torch's conversion, then rewritten)."""
    import importlib.util

    from qbench.formats.tflite import legacy_op_codes, strip_signatures
    from qbench.methods.export_tflite import convert_tflite

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "conv_fc.py"
    source.write_text(UNSIGNED_NET)
    spec = importlib.util.spec_from_file_location("conv_fc_for_tflite", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    converted = folder / "conv_fc_signed.tflite"
    convert_tflite(module.ConvFc(), (3, SIZE, SIZE), converted)
    data = strip_signatures(converted.read_bytes())
    out = folder / ("conv_fc_legacy.tflite" if legacy else "conv_fc_unsigned.tflite")
    out.write_bytes(legacy_op_codes(data) if legacy else data)
    return out


def _save_onnx(graph: object, path: Path, opset: int = 13) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def state_input_onnx(path: Path, batch: int | str = "N", seed: int = 0) -> Path:
    """An RNN/VAD-like graph: data `x` [batch, 16] and a state `h` [2, 1, 8] whose first axis
    is not a batch (layers), outputs `y` [batch, 4] (x @ W plus the state's mean @ Wh) and the
    next state `hn` [2, 1, 8]. ONNX Runtime refuses an `h` of any other shape."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "wh"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("ReduceMean", ["h"], ["hm"], axes=[0, 1], keepdims=0),
        helper.make_node("MatMul", ["hm", "wh"], ["hw"]),
        helper.make_node("Add", ["xw", "hw"], ["y"]),
        helper.make_node("Tanh", ["h"], ["hn"]),
    ]
    graph = helper.make_graph(
        nodes,
        "state_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("hn", TensorProto.FLOAT, [2, 1, 8])],
        inits,
    )  # fmt: skip
    return _save_onnx(graph, path)


def scalar_input_onnx(path: Path, seed: int = 0) -> Path:
    """A graph with a scalar int64 sample rate `sr` beside data `x` [N, 16]: x is reshaped to
    [-1, sr / 1000] before x @ W [16, 4], so it runs only at sr = 16000 (as a speech model that
    checks its sample rate would)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(1000, np.int64), "khz"),
        numpy_helper.from_array(np.array([-1], np.int64), "rows"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Div", ["sr", "khz"], ["width"]),
        helper.make_node("Unsqueeze", ["width", "axis0"], ["width1"]),
        helper.make_node("Concat", ["rows", "width1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["xr"], allowzero=1),  # 0 is no copy
        helper.make_node("MatMul", ["xr", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scalar_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )  # fmt: skip
    return _save_onnx(graph, path, opset=14)  # Reshape's allowzero


def stride32_onnx(path: Path, seed: int = 0) -> Path:
    """A detector-like graph of dynamic height and width that must be multiples of 32 (a
    space-to-depth "focus" layer of block 32, as YOLO-style stems need): [N, 3, H, W] ->
    SpaceToDepth(32) -> GlobalAveragePool -> Flatten -> MatMul [3072, 4]. ONNX Runtime
    refuses H = W = 16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (3 * 32 * 32, 4)).astype(np.float32)
    nodes = [
        helper.make_node("SpaceToDepth", ["x"], ["s2d"], blocksize=32),
        helper.make_node("GlobalAveragePool", ["s2d"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stride32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save_onnx(graph, path)


def nhwc_onnx(path: Path, seed: int = 0) -> Path:
    """A channels-last image graph, x [N, 8, 8, 3] -> Flatten -> MatMul [192, 4], as a
    converted TensorFlow model takes its input."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.2, (8 * 8 * 3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nhwc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save_onnx(graph, path)


REGRESSION_INPUTS, REGRESSION_HIDDEN = 8, 16


def regression_onnx(path: Path) -> Path:
    """x [N, 8] -> MatMul -> Relu -> MatMul -> [N, 1]. One hidden unit is 1000 times larger
    than the rest and its output weight 1000 times smaller: it fixes the int8 range of the
    hidden activations, and the small units, which carry the output's variation, round to
    zero there. An int8 model of it is broken while argmax (always 0) would call it perfect."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w1 = rng.normal(scale=0.5, size=(REGRESSION_INPUTS, REGRESSION_HIDDEN)).astype(np.float32)
    w2 = rng.normal(size=(REGRESSION_HIDDEN, 1)).astype(np.float32)
    b1 = np.zeros(REGRESSION_HIDDEN, np.float32)
    w1[:, 0], b1[0], w2[0, 0] = 0.0, 1000.0, 0.0005  # the loud unit: constant 1000 → +0.5
    w1[0, 0] = 50.0  # ...that still varies, so static calibration sees a range of thousands
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
        ],
        "regression",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", REGRESSION_INPUTS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
