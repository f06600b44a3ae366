"""Typed parameters shared by every plugin family."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class Params(BaseModel):
    """Base of every member's typed parameters: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Fields added after artifacts were cached, with the value that keeps the old behaviour:
    # dumps (artifact cache keys, method_sha256, a cell's params) leave them out at that value,
    # so they stay those of the parameters before the field existed.
    omitted_at_default: ClassVar[dict[str, Any]] = {}
    # Fields that hold a file or folder path: a relative one is read from the suite's folder.
    path_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def absolute_paths(cls, raw: dict[str, Any], base: Path) -> dict[str, Any]:
        """`raw` (untyped parameters) with each relative path in `path_fields` made absolute
        against `base` (the suite's folder), before validation."""
        out = dict(raw)
        for name in cls.path_fields:
            value = out.get(name)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                out[name] = str(base / value)
        return out

    @model_serializer(mode="wrap")
    def _omit_added_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, value in self.omitted_at_default.items():
                if name in data and data[name] == value:
                    del data[name]
        return data


class CheckError(ValueError):
    """A member's parameters name something that cannot be used (a missing file, a factory
    that does not import, data that does not fit the model): `field` is the parameter at fault,
    str() one sentence. The planner reports it as FILE:LINE: FIELD: message."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class NoParams(Params):
    """The member takes no parameters."""


def describe_params(params_cls: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of each field, for `qbench list`."""
    rows = []
    for name, field in params_cls.model_fields.items():
        annotation = field.annotation
        if get_origin(annotation) is Literal:
            type_name = "|".join(str(a) for a in get_args(annotation))
        else:
            type_name = getattr(annotation, "__name__", None) or str(annotation)
            type_name = re.sub(r"\b(?:[a-z_]\w*\.)+(\w)", r"\1", type_name)  # no module paths
        value = None if field.is_required() else field.get_default()
        if hasattr(value, "name") and hasattr(value, "params"):  # a member reference
            type_name = "name | {name, params}"
            value = value.name if not value.params else value.model_dump(exclude_none=True)
        default = "required" if field.is_required() else repr(value)
        rows.append((name, type_name, default, field.description or ""))
    return rows


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short SHA-256 of a JSON-able object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
