"""Any ONNX file by path: it is its own fp32 reference; only ONNX-loading backends run it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from qbench.models.base import LoadedModel, ModelSource
from qbench.params import Params, file_sha256
from qbench.plugins import models


class OnnxFileParams(Params):
    path: str = Field(description="path to a .onnx file (one float32 NCHW input)")
    dataset: str = Field(default="sample_photos", description="dataset whose inputs it takes")


@models.register
class OnnxFileModel(ModelSource):
    name = "onnx_file"
    description = "an fp32 ONNX file given by path"
    Params = OnnxFileParams
    dataset = "sample_photos"
    format = "onnx"

    def dataset_for(self, params: Params) -> str:
        assert isinstance(params, OnnxFileParams)
        return params.dataset

    def load(self, params: Params) -> LoadedModel:
        assert isinstance(params, OnnxFileParams)
        path = Path(params.path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"onnx_file: {params.path}: no such file")
        return LoadedModel(
            weights=f"onnx file {path.name}", sha256=file_sha256(str(path)), onnx_path=path
        )
