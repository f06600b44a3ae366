"""A user's torch module: a factory function that builds it, optional weights, its inputs.

`factory` is "package.module:function" (imported as Python imports it, the current folder
first) or "path/to/file.py:function". The function takes no arguments and returns an
`nn.Module`; weights, where given, are a state dict loaded with strict key matching from a
.safetensors file or a torch file read with `weights_only=True` (no pickle code runs). Without
weights the module keeps what the factory gave it. The inputs (names, per-sample shapes, dtypes)
are declared, or taken from the dataset's fields.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qbench.inputs import InputSpec
from qbench.models._file import resolve_path
from qbench.models.base import LoadedModel, ModelSource, state_dict_sha256
from qbench.params import CheckError, Params, file_sha256, stable_hash
from qbench.plugins import models
from qbench.suite.schema import MemberRef

DTYPES = ("float32", "float16", "int64", "int32", "bool")


class InputDecl(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="input name (matched with the dataset's field of that name)")
    shape: list[int] = Field(description="shape of one sample, without the batch axis")
    dtype: str = Field(default="float32", description="one of " + ", ".join(DTYPES))

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d < 1 for d in value):
            raise ValueError("every size must be a positive integer")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"expected one of {', '.join(DTYPES)}")
        return value


class TorchModuleParams(Params):
    factory: str = Field(
        description='"package.module:function" or "path/to/file.py:function" (relative: from '
        "the suite's folder); called with no arguments, returns an nn.Module"
    )
    weights: str | None = Field(
        default=None,
        description="state dict to load (strict): .safetensors, or .pt/.pth read with "
        "weights_only=True; none: the factory's own weights",
    )
    inputs: list[InputDecl] | None = Field(
        default=None,
        description="the module's inputs in call order [{name, shape, dtype}]; none: one "
        "input shaped as the dataset's",
    )
    dataset: MemberRef = Field(
        default=MemberRef(name="synthetic"),
        description="dataset whose inputs it takes: a name or {name, params}",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("weights",)

    @classmethod
    def absolute_paths(cls, raw: dict[str, Any], base: Path) -> dict[str, Any]:
        out = super().absolute_paths(raw, base)
        factory = out.get("factory")
        if isinstance(factory, str):
            target, sep, function = factory.rpartition(":")
            if sep and target.endswith(".py") and not Path(target).expanduser().is_absolute():
                out["factory"] = f"{base / target}:{function}"
        return out


def split_factory(factory: str) -> tuple[str, str]:
    target, sep, function = factory.rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise CheckError(
            "factory",
            f'{factory!r}: expected "package.module:function" or "path/to/file.py:function"',
        )
    return target, function


def import_factory(factory: str) -> Any:
    """The factory function, or CheckError naming why it cannot be had."""
    target, function = split_factory(factory)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise CheckError("factory", f"{target}: no such file")
            name = f"qbench_factory_{file_sha256(str(path), 12)}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # the current folder, as `python -m` would
            module = importlib.import_module(target)
    except CheckError:
        raise
    except Exception as exc:  # the user's module failed to import: name it
        raise CheckError(
            "factory", f"{target}: import failed ({type(exc).__name__}: {exc})".strip()
        ) from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise CheckError("factory", f"{target} has no function {function!r}")
    return fn


def read_state_dict(path: Path) -> dict[str, Any]:
    """A state dict from .safetensors, or from a torch file without running pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    loaded = torch.load(path, weights_only=True, map_location="cpu")
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a checkpoint that wraps its state dict
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: holds a {type(loaded).__name__}, expected a state dict")
    return loaded


@models.register
class TorchModuleModel(ModelSource):
    name = "torch_module"
    description = "a torch module built by your factory function, with optional weights"
    Params = TorchModuleParams
    dataset = "synthetic"
    format = "torch"

    def check(self, params: Params) -> None:
        assert isinstance(params, TorchModuleParams)
        import_factory(params.factory)
        if params.weights is not None:
            resolve_path(params.weights, "weights", (".safetensors", ".pt", ".pth", ".bin"),
                         "a weights")  # fmt: skip

    def inputs(self, params: Params) -> list[InputSpec] | None:
        assert isinstance(params, TorchModuleParams)
        if params.inputs is None:
            return None
        return [InputSpec(d.name, tuple(d.shape), d.dtype) for d in params.inputs]

    def default_label(self, params: Params) -> str:
        """`small_net.build` for small_net.py:build or models.small_net:build."""
        assert isinstance(params, TorchModuleParams)
        target, function = split_factory(params.factory)
        module = Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]
        return f"{module}.{function}"

    def dataset_for(self, params: Params) -> Any:
        assert isinstance(params, TorchModuleParams)
        return params.dataset

    def architecture(self, params: Params) -> Any:
        assert isinstance(params, TorchModuleParams)
        import torch

        module = import_factory(params.factory)()
        if not isinstance(module, torch.nn.Module):
            raise ValueError(
                f"factory {params.factory} returned a {type(module).__name__}, not an nn.Module"
            )
        return module.eval()

    def load(self, params: Params) -> LoadedModel:
        assert isinstance(params, TorchModuleParams)
        module = self.architecture(params)
        weights = "the factory's own"
        if params.weights is not None:
            path = resolve_path(params.weights, "weights",
                                (".safetensors", ".pt", ".pth", ".bin"), "a weights")  # fmt: skip
            module.load_state_dict(read_state_dict(path), strict=True)
            weights = path.name
        module.eval()
        # The weights and the code that uses them: an edited forward() is another model.
        code = _source_sha(import_factory(params.factory))
        return LoadedModel(
            weights=f"{params.factory} with {weights} weights",
            sha256=stable_hash([state_dict_sha256(module.state_dict()), code]),
            module=module,
        )


def _source_sha(fn: Any) -> str | None:
    import inspect

    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    return file_sha256(path) if path and Path(path).is_file() else None
