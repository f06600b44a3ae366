"""A suite built from `qbench run --model ...` flags: one model (or a few) without a suite file.

The flags become the suite a user would have written (`--model m.onnx` is `models: [{name:
onnx_file, params: {path: m.onnx}}]`), so the plan, the store and the report are those of a
suite; its text is stored with the run like a suite file's. Errors name the flag, not a line.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from qbench.suite.loader import SuiteError, SuiteSource

WHERE = "qbench run"
_FIELDS_OF = {  # model parameter -> the flag that set it
    "path": "--model",
    "factory": "--model",
    "weights": "--weights",
    "inputs": "--input",
    "constants": "--input",
    "batch_axes": "--input",
    "dataset": "--data",
}
_FLAGS = {
    "models": "--model",
    "methods": "--methods",
    "backends": "--backends",
    "devices": "--device",
    "scenario": "--batch/--threads",
    "accuracy": "--data",
    "name": "--name",
}
# What runs each model format where --backends is not given.
DEFAULT_BACKENDS = {
    "onnx": ["onnxruntime"],
    "tflite": ["litert"],
    "torch": ["torch", "onnxruntime"],
}


class CommandLineSource(SuiteSource):
    """The generated suite's text, with errors that name the flag they came from."""

    def __init__(self, text: str, models: Sequence[str]) -> None:
        super().__init__(Path.cwd() / "<command line>", text)
        self.models = list(models)

    def error(self, loc: Sequence[str | int], message: str) -> SuiteError:
        head = str(loc[0]) if loc else ""
        flag = _FLAGS.get(head, f"--{head}" if head else "")
        if head == "scenario" and len(loc) > 1:
            flag = f"--{loc[1]}"
        if head == "models" and len(loc) > 1 and isinstance(loc[1], int):
            param = str(loc[3]) if len(loc) > 3 and loc[2] == "params" else ""
            flag = _FIELDS_OF.get(param, "--model")
            if flag == "--model":
                flag = f"--model {self.models[loc[1]]}"
        elif head == "accuracy" and len(loc) > 3 and loc[2] == "params":
            flag = f"--data-param {loc[3]}" if loc[3] != "path" else "--data"
        return SuiteError(WHERE, None, flag, message)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _ints(flag: str, value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise SuiteError(WHERE, None, flag, f"{value!r}: expected integers, e.g. 1,8") from None


_INPUT = re.compile(r"^([A-Za-z_][\w.\-/]*):(\d+(?:x\d+)*)(?::([a-z0-9]+))?$")


def _input(value: str) -> dict[str, Any]:
    match = _INPUT.match(value)
    if not match:
        raise SuiteError(WHERE, None, "--input",
                         f"{value!r}: expected NAME:SHAPE[:DTYPE], e.g. x:3x32x32 or "
                         "ids:128:int64")  # fmt: skip
    name, shape, dtype = match.groups()
    return {"name": name, "shape": [int(d) for d in shape.split("x")], "dtype": dtype or "float32"}


def _constant(value: str) -> tuple[str, Any]:
    """(input name, value) of `--input NAME=VALUE`: the value is YAML (16000, 0.5, [1, 2])."""
    name, _, raw = value.partition("=")
    if not re.match(r"^[A-Za-z_][\w.\-/:]*$", name.strip()):
        raise SuiteError(WHERE, None, "--input", f"{value!r}: expected NAME=VALUE, e.g. sr=16000")
    try:
        return name.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise SuiteError(WHERE, None, f"--input {name}", f"{raw!r} is not a YAML value") from None


def _file_constants(values: Sequence[str] | None) -> dict[str, Any]:
    """A model file's `constants` from --input NAME=VALUE (its inputs' shapes are the file's:
    NAME:SHAPE is for a torch factory)."""
    out = {}
    for value in values or []:
        if "=" not in value:
            raise SuiteError(WHERE, None, "--input",
                             f"{value!r}: a model file declares its own input shapes; give a "
                             "constant input's value as NAME=VALUE, e.g. sr=16000")  # fmt: skip
        name, constant = _constant(value)
        out[name] = constant
    return out


def model_entry(value: str, args: argparse.Namespace, known: Sequence[str]) -> tuple[dict, str]:
    """(the suite's model entry, its format) for one --model value."""
    path = Path(value).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".tflite"):
        name = "onnx_file" if suffix == ".onnx" else "tflite_file"
        file_params: dict[str, Any] = {"path": str(path.absolute())}
        constants = _file_constants(getattr(args, "input", None))
        if constants and name == "tflite_file":
            raise SuiteError(WHERE, None, "--input", "a .tflite file's inputs are all batches "
                             "along axis 0: NAME=VALUE is for a .onnx file")  # fmt: skip
        if constants:
            file_params["constants"] = constants
        return {"name": name, "params": file_params}, suffix[1:]
    if suffix == ".gguf" or (path.is_dir() and (path / "config.json").is_file()):
        return {"name": "hf_local", "params": {"path": str(path.absolute())}}, "torch"
    if ":" in value and not path.exists():
        target, _, function = value.rpartition(":")
        if target.endswith(".py"):
            target = str(Path(target).expanduser().absolute())
        params: dict[str, Any] = {"factory": f"{target}:{function}"}
        if args.weights:
            params["weights"] = str(Path(args.weights).expanduser().absolute())
        if args.input:
            if any("=" in v for v in args.input):
                raise SuiteError(WHERE, None, "--input", "NAME=VALUE gives a constant to a "
                                 "model file's input; a torch factory's inputs are "
                                 "NAME:SHAPE[:DTYPE]")  # fmt: skip
            params["inputs"] = [_input(v) for v in args.input]
        return {"name": "torch_module", "params": params}, "torch"
    if value in known:
        return {"name": value}, "torch"
    what = "is a directory" if path.is_dir() else ("is a file" if path.exists() else "not found")
    raise SuiteError(WHERE, None, f"--model {value}",
                     f"{what}; expected a .onnx or .tflite file, a transformers checkpoint "
                     "folder (config.json) or .gguf file, a torch factory "
                     "`file.py:function` or `package.module:function`, or a model name "
                     f"({', '.join(known)})")  # fmt: skip


def dataset_entry(value: str, params: dict[str, Any], known: Sequence[str],
                  text: bool = False) -> dict[str, Any]:  # fmt: skip
    """The dataset --data names; `text`: for a transformers checkpoint (a folder of class
    folders of .txt documents, or a .txt file of running text)."""
    path = Path(value).expanduser()
    if value in known:
        return {"name": value, "params": params}
    if text and (path.is_dir() or path.suffix.lower() == ".txt"):
        name = "text_folder" if path.is_dir() else "text_corpus"
        return {"name": name, "params": {"path": str(path.absolute()), **params}}
    if path.is_dir():
        return {"name": "image_folder", "params": {"path": str(path.absolute()), **params}}
    if path.suffix.lower() in (".npz", ".npy"):
        return {"name": "arrays", "params": {"path": str(path.absolute()), **params}}
    what = "is a file of another kind" if path.exists() else "no such folder or file"
    raise SuiteError(WHERE, None, "--data",
                     f"{value}: {what}; expected an image folder, a .npz/.npy file, or a "
                     f"dataset name ({', '.join(known)})")  # fmt: skip


def _data_params(values: Sequence[str] | None) -> dict[str, Any]:
    out = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SuiteError(WHERE, None, "--data-param", f"{item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SuiteError(WHERE, None, f"--data-param {key}",
                             f"{raw!r} is not a YAML value") from None  # fmt: skip
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "model"


def suite_from_args(args: argparse.Namespace) -> CommandLineSource:
    """The suite text the flags describe, parsed (model files are checked by the planner)."""
    from qbench.plugins import load_all

    fam = load_all()
    if args.data_param and not args.data:
        raise SuiteError(WHERE, None, "--data-param", "give --data too")
    entries, formats = [], []
    for value in args.model:
        entry, fmt = model_entry(value, args, fam.models.names())
        entries.append(entry)
        formats.append(fmt)
    backends = _csv(args.backends) or sorted(
        {b for f in formats for b in DEFAULT_BACKENDS[f]}, key=lambda b: (b != "torch", b)
    )
    first = Path(args.model[0]).stem if ":" not in args.model[0] else args.model[0].split(":")[-1]
    name = args.name or _slug(first if len(args.model) == 1 else f"{first}_and_more")
    suite: dict[str, Any] = {
        "name": name,
        "description": "qbench run " + " ".join(f"--model {m}" for m in args.model),
        "models": entries,
        "methods": _csv(args.methods),
        "backends": backends,
        "devices": [args.device],
        "scenario": {
            "batch": _ints("--batch", args.batch),
            "threads": _ints("--threads", args.threads),
        },
    }
    if args.data:
        hf = [e for e in entries if e["name"] == "hf_local"]
        if hf and len(hf) < len(entries):
            why = ("one dataset for a transformers checkpoint and other models: write a suite "
                   "file (--dry-run prints one)")  # fmt: skip
            raise SuiteError(WHERE, None, "--data", why)
        data = dataset_entry(args.data, _data_params(args.data_param), fam.datasets.names(),
                             text=bool(hf))  # fmt: skip
        if hf:  # the checkpoint fills in its own tokenizer and length (hf_local's dataset)
            for entry in hf:
                entry["params"]["dataset"] = data
        else:
            suite["accuracy"] = {"dataset": data}
    return CommandLineSource(yaml.safe_dump(suite, sort_keys=False), args.model)


def describe(source: CommandLineSource) -> str:
    """The generated suite, for --dry-run: save it as a .yaml file to run the same again."""
    return "# the suite these flags describe (save it as a .yaml file to run it again)\n" + (
        source.text
    )
