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
