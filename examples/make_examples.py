"""Writes the model and data files suites/your_model.yaml runs, into examples/generated/.

    python examples/make_examples.py [--out examples/generated]

- images/: an image folder of real photo crops (scikit-image's chelsea, coffee, rocket,
  astronaut, camera and coins), one sub-folder per class, 12 small crops each;
- tiny_cnn.safetensors: examples/tiny_cnn.py's TinyCNN trained on half of those crops (the
  half image_folder does not evaluate), so top-1 means something;
- tiny_cnn.onnx: the same network exported to ONNX (dynamic batch);
- tiny_cnn.tflite: the same network converted to LiteRT by litert-torch (where installed);
- images.npz: the same crops preprocessed as arrays (`input`, `labels`), evaluated ones first.

Nothing here ships in git: rerun the script after a fresh clone (it takes seconds).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "camera", "coins")
SIZE = 32
PER_CLASS = 12


def write_images(folder: Path) -> None:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]  # grey photos
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        h, w = img.shape[:2]
        for k in range(PER_CLASS):
            side = int(min(h, w) * rng.uniform(0.12, 0.3))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(np.ascontiguousarray(img[y : y + side, x : x + side]))
            crop.resize((48, 48)).save(target / f"{name}_{k:02d}.png")


def load_factory() -> object:
    spec = importlib.util.spec_from_file_location("tiny_cnn", HERE / "tiny_cnn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "generated"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from safetensors.torch import save_file

    from qbench.datasets.image_folder import ImageFolder, ImageFolderParams
    from qbench.methods.export import export_onnx

    write_images(out / "images")
    data = ImageFolder(ImageFolderParams(path=str(out / "images"), resize=SIZE, crop=SIZE))
    train_x, train_y = data.load("train", None)
    eval_x, eval_y = data.load("eval", None)

    torch.manual_seed(0)
    net = load_factory().build()  # type: ignore[attr-defined]
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.as_tensor(train_x), torch.as_tensor(train_y)
    net.train()
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        held_out = float((net(torch.as_tensor(eval_x)).argmax(1).numpy() == eval_y).mean())
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out / "tiny_cnn.safetensors"))
    export_onnx(net, (3, SIZE, SIZE), out / "tiny_cnn.onnx")
    # the evaluated crops first, then the others: `arrays` evaluates the first half and
    # calibrates on the rest, the same split image_folder makes
    np.savez(out / "images.npz", input=np.concatenate([eval_x, train_x]),
             labels=np.concatenate([eval_y, train_y]))  # fmt: skip
    made = ["images/", "tiny_cnn.safetensors", "tiny_cnn.onnx", "images.npz"]
    if importlib.util.find_spec("litert_torch") is not None:
        from qbench.methods.export_tflite import convert_tflite

        convert_tflite(net, (3, SIZE, SIZE), out / "tiny_cnn.tflite")
        made.append("tiny_cnn.tflite")
    else:
        print("litert-torch is not installed: no tiny_cnn.tflite", file=sys.stderr)
    print(f"wrote {', '.join(made)} in {out} (held-out top-1 of the trained CNN {held_out:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
