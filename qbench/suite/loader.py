"""Load a suite file safely and turn every mistake into one line: file:line: field: expected.

YAML is composed into nodes (which keep their line numbers) and constructed with the safe
loader, so a pydantic error location such as ('methods', 1, 'params') maps back to a line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from qbench.files import read_regular
from qbench.suite.schema import Suite

# A suite or device file is a page of YAML; anything larger is not one (a model given by
# mistake, or a file crafted to exhaust memory).
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_VALUES = 200_000


class SuiteError(Exception):
    """A suite that cannot be used. str() is one line: 'FILE:LINE: FIELD: what was expected'."""

    def __init__(self, path: str | Path, line: int | None, field: str, message: str) -> None:
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class SuiteSource:
    """The parsed YAML of one suite with the node tree kept for line lookup."""

    def __init__(self, path: str | Path, text: str | None = None, what: str = "suite") -> None:
        """`what`: the kind of file, for messages (suite, device)."""
        self.path = Path(path)
        if text is None:
            try:  # a regular file only (a FIFO would hang), read no further than the limit
                raw = read_regular(self.path, MAX_FILE_BYTES)
            except OSError as exc:
                raise SuiteError(path, None, "", f"cannot read the file ({exc.strerror})") from None
            if len(raw) > MAX_FILE_BYTES:
                raise SuiteError(path, None, "", f"more than {MAX_FILE_BYTES} bytes: too large "
                                 "for a suite or device file")  # fmt: skip
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1
                byte = raw[exc.start]
                raise SuiteError(path, line, "", f"not a UTF-8 text file (byte 0x{byte:02x} "
                                 "cannot be read): a suite or device file is YAML "
                                 "text") from None  # fmt: skip
        self.text = text
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise SuiteError(path, line, "", f"invalid YAML: {exc.problem or exc}") from None
        except yaml.reader.ReaderError as exc:  # a NUL or other control character
            line = text[: exc.position].count("\n") + 1
            what = f"character #x{exc.character:04x}" if isinstance(exc.character, int) else "byte"
            raise SuiteError(path, line, "", f"not a YAML text file: {what} is not allowed "
                             f"({exc.reason})") from None  # fmt: skip
        except yaml.YAMLError as exc:
            raise SuiteError(
                path, None, "", f"invalid YAML: {' '.join(str(exc).split())}"
            ) from None
        except RecursionError:
            raise SuiteError(path, None, "", "invalid YAML: nested too deeply") from None
        try:
            _refuse_duplicate_keys(self.root, path)
        except RecursionError:
            raise SuiteError(path, None, "", "invalid YAML: nested too deeply") from None
        if not isinstance(self.data, dict):
            kind = type(self.data).__name__ if self.data is not None else "an empty file"
            raise SuiteError(path, 1, "", f"expected a mapping of {what} fields, got {kind}")

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line (1-based) of the deepest node along `loc` that exists in the file."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        child = value
                        line = key.start_mark.line + 1
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and 0 <= part < len(node.value)
            ):
                child = node.value[part]
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line

    def error(self, loc: Sequence[str | int], message: str) -> SuiteError:
        return SuiteError(self.path, self.line_of(loc), format_loc(loc), message)


def _refuse_duplicate_keys(node: Any, path: str | Path) -> None:
    """YAML lets a later key silently replace an earlier one (`warmup: 1` then `warmup: 2`):
    refuse it, naming both lines, so what runs is what the file visibly says. Also refuse a
    file whose aliases expand to more values than any suite has (a "billion laughs" file
    would otherwise take the validator forever)."""
    sizes: dict[int, int] = {}

    def size(current: Any) -> int:
        # post-order over unique nodes (aliases share them); sizes count expanded values
        if id(current) in sizes:
            return sizes[id(current)]
        sizes[id(current)] = 1  # a recursive alias counts once
        total = 1
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        first = seen[key.value]
                        raise SuiteError(path, line, key.value, f"duplicate key: also on line "
                                         f"{first} (YAML would keep only this one)")  # fmt: skip
                    seen[key.value] = line
                total += size(key) + size(value)
        elif isinstance(current, yaml.SequenceNode):
            total += sum(size(v) for v in current.value)
        sizes[id(current)] = total
        if total > MAX_VALUES:
            raise SuiteError(path, current.start_mark.line + 1, "", f"expands to more than "
                             f"{MAX_VALUES} values (through YAML aliases?)")  # fmt: skip
        return total

    if node is not None:
        size(node)


def _describe_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def pydantic_message(err: dict[str, Any]) -> str:
    """One readable sentence from one pydantic error."""
    kind = err.get("type", "")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    if "input" in err and not isinstance(value, dict | list):
        msg = f"{msg}, got {_describe_input(value)}"
    return msg


def _loc_without_wrappers(loc: Sequence[Any]) -> list[str | int]:
    # pydantic adds union/function tags to locations ("function-after[...]", "str"); drop them.
    return [
        p
        for p in loc
        if isinstance(p, int)
        or ("[" not in str(p) and p not in ("str", "list[str]", "int", "list[int]"))
    ]


def first_error(
    source: SuiteSource, exc: ValidationError, prefix: Sequence[str | int] = ()
) -> SuiteError:
    err = exc.errors()[0]
    loc = [*prefix, *_loc_without_wrappers(err["loc"])]
    return source.error(loc, pydantic_message(err))


def load_suite(path: str | Path) -> tuple[Suite, SuiteSource]:
    """Parse and type-check a suite file. Member names and parameters are checked by the planner."""
    return validate_suite(SuiteSource(path))


def validate_suite(source: SuiteSource) -> tuple[Suite, SuiteSource]:
    """Type-check an already parsed suite (a file, or one built from command-line flags)."""
    try:
        suite = Suite.model_validate(source.data)
    except ValidationError as exc:
        raise first_error(source, exc) from None
    return suite, source
