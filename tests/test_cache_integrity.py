"""The artifact cache checks what it hands out, and torch artifacts are read without running
pickled code: every cache hit is re-hashed against the SHA-256 recorded when the entry was
built (a changed, truncated or unrecorded entry is rebuilt, and the caller told), verify_file
re-checks a file between processes, and the torch backends load artifacts weights-only, so a
pickle that would run a shell command is refused before any of it runs."""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.cache import (
    CacheEntry,
    IntegrityError,
    cached_file,
    meta_path,
    read_meta,
    recorded_sha256,
    sha256_of,
    sha256_path,
    verify_file,
)
from qbench.plugins import load_all

FAM = load_all()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache of this test's own (spawned processes inherit the variable)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("QBENCH_CACHE_DIR", str(root))
    return root


def counting_build(counter: Path, payload: bytes = b"entry bytes " * 1000, delay: float = 0.0):
    """A build that writes `payload` and metadata, and appends a line to `counter` per call."""

    def build(tmp: Path) -> dict[str, Any]:
        with open(counter, "a") as fh:
            fh.write("built\n")
        time.sleep(delay)
        tmp.write_bytes(payload)
        return {"packed_bytes": len(payload)}

    return build


def builds(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


KEY = {"test": "cache integrity", "v": 1}


# --- the cache --------------------------------------------------------------------------------


def test_entry_records_its_sha256_and_a_hit_is_checked(cache: Path, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    entry = cached_file("things", KEY, ".bin", counting_build(counter))
    path, cached = entry  # unpacks as before: (path, was_cached)
    assert isinstance(entry, CacheEntry) and not cached and entry.note is None
    assert path.parent == cache / "things"
    assert recorded_sha256(path) == sha256_of(path)
    # sha256sum's format: the entry and its metadata, by name
    assert sha256_path(path).read_text().splitlines() == [
        f"{sha256_of(path)}  {path.name}",
        f"{sha256_of(meta_path(path))}  {meta_path(path).name}",
    ]
    again = cached_file("things", KEY, ".bin", counting_build(counter))
    assert again == (path, True) and again.cached and again.note is None
    assert builds(counter) == 1
    assert read_meta(path) == {"packed_bytes": 12000}


@pytest.mark.parametrize("damage", ["flip", "truncate", "overwrite"])
def test_changed_entry_is_rebuilt_and_the_caller_told(
    cache: Path, tmp_path: Path, damage: str
) -> None:
    counter = tmp_path / "count"
    path, _ = cached_file("things", KEY, ".bin", counting_build(counter))
    good = path.read_bytes()
    if damage == "flip":
        data = bytearray(good)
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(good[: len(good) // 3])
    else:
        path.write_bytes(b"something else entirely")
    bad = path.read_bytes()

    entry = cached_file("things", KEY, ".bin", counting_build(counter))
    assert entry.path == path and not entry.cached
    assert entry.note is not None and "sha256" in entry.note and "rebuilt" in entry.note
    assert "\n" not in entry.note
    assert builds(counter) == 2
    assert path.read_bytes() == good != bad  # the damaged bytes are gone
    assert recorded_sha256(path) == sha256_of(path)
    # and from now on it is a plain hit again
    assert cached_file("things", KEY, ".bin", counting_build(counter)) == (path, True)
    assert builds(counter) == 2
    # nothing left behind beside it but the entry, its metadata, record and lock
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, meta_path(path).name, sha256_path(path).name, f".{path.name}.lock"]
    )


def test_changed_metadata_is_rebuilt(cache: Path, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    path, _ = cached_file("things", KEY, ".bin", counting_build(counter))
    meta_path(path).write_text('{"packed_bytes": 1}')
    entry = cached_file("things", KEY, ".bin", counting_build(counter))
    assert not entry.cached and entry.note and ".meta.json" in entry.note
    assert read_meta(path) == {"packed_bytes": 12000} and builds(counter) == 2


def test_entry_without_recorded_hash_is_rebuilt(cache: Path, tmp_path: Path) -> None:
    """What an older qbench left: the entry and its metadata, no record."""
    counter = tmp_path / "count"
    path, _ = cached_file("things", KEY, ".bin", counting_build(counter))
    sha256_path(path).unlink()
    path.write_bytes(b"older bytes")
    entry = cached_file("things", KEY, ".bin", counting_build(counter))
    assert not entry.cached and entry.note and "no recorded sha256" in entry.note
    assert builds(counter) == 2 and path.read_bytes() != b"older bytes"
    assert recorded_sha256(path) == sha256_of(path)


def test_entry_without_metadata_and_stale_files_beside_it(cache: Path, tmp_path: Path) -> None:
    """A build that returns no metadata is recorded alone; metadata that appears beside it
    later is not trusted; an entry removed by hand leaves nothing that fails its rebuild."""
    counter = tmp_path / "count"

    def build(tmp: Path) -> None:
        counting_build(counter)(tmp)

    path, _ = cached_file("things", KEY, ".npy", build)
    assert not meta_path(path).exists()
    assert len(sha256_path(path).read_text().splitlines()) == 1
    assert cached_file("things", KEY, ".npy", build).cached

    meta_path(path).write_text('{"injected": true}')
    entry = cached_file("things", KEY, ".npy", build)
    assert not entry.cached and entry.note and "not in its sha256 record" in entry.note
    assert not meta_path(path).exists() and read_meta(path) == {}

    path.unlink()  # by hand: the stale record goes with the rebuild, no note (nothing used)
    entry = cached_file("things", KEY, ".npy", build)
    assert not entry.cached and entry.note is None
    assert cached_file("things", KEY, ".npy", build).cached and builds(counter) == 3


def test_failed_build_leaves_no_entry(cache: Path) -> None:
    def build(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        cached_file("things", KEY, ".bin", build)
    assert [p.name for p in (cache / "things").iterdir() if not p.name.endswith(".lock")] == []


def _ask(counter: str) -> tuple[str, bool, str | None]:
    """One process asking for the entry (a spawned worker: module level, picklable)."""
    entry = cached_file("things", KEY, ".bin", counting_build(Path(counter), delay=0.3))
    return str(entry.path), entry.cached, entry.note


def test_concurrent_callers_build_once_and_rebuild_once(cache: Path, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        first = pool.map(_ask, [str(counter)] * 4)
        assert builds(counter) == 1
        assert len({p for p, _, _ in first}) == 1
        assert sorted(c for _, c, _ in first) == [False, True, True, True]

        path = Path(first[0][0])
        path.write_bytes(b"tampered")
        second = pool.map(_ask, [str(counter)] * 4)
    assert builds(counter) == 2  # one rebuild, whoever got the lock first
    assert sorted(c for _, c, _ in second) == [False, True, True, True]
    notes = [n for _, _, n in second if n]
    assert len(notes) == 1 and "sha256" in notes[0]
    assert recorded_sha256(path) == sha256_of(path)


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "artifact.pt"
    path.write_bytes(os.urandom(3 << 20))  # several read chunks
    full = sha256_of(path)
    verify_file(path, full)
    verify_file(path, full[:16])  # a row's artifact_sha256
    verify_file(path, full.upper())

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        verify_file(path, full)
    assert isinstance(info.value, ValueError) and info.value.actual == sha256_of(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and full[:16] in message

    path.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_file(path, full)
    with pytest.raises(ValueError, match="hex digits"):
        verify_file(path, "abc")  # a mistake of the caller's, not a changed file


# --- torch artifacts --------------------------------------------------------------------------

TORCH_METHODS = sorted(n for n in FAM.methods.names() if "torch" in FAM.methods.get(n).produces)
# Variants whose state dicts hold more than default ones do (float layers, float activations).
# static_int8's default torch artifact is a PT2E program (its safety: tests/test_pt2e.py); its
# state-dict form is the legacy FX path's.
DEFAULTS = {"static_int8": {"torch_flow": "fx"}}
VARIANTS: list[tuple[str, dict[str, Any]]] = [(n, DEFAULTS.get(n, {})) for n in TORCH_METHODS] + [
    ("mixed", {"layers": {"features.0": 32, "classifier.*": 8}}),
    ("mixed", {"auto": True}),
    ("qat", {"bits_a": 32, "learned_scale": False}),
]
STEPS = {"qat": {"steps": 5}}  # training is not what is tested here


class Payload:
    """What a malicious artifact holds: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def torch_ctx() -> Any:
    torch = pytest.importorskip("torch")
    from qbench.methods.base import MakeContext
    from qbench.models._architectures import DigitsCNN
    from qbench.models.base import LoadedModel

    torch.manual_seed(0)
    source = FAM.models.get("digits_cnn")()
    calib, _ = FAM.datasets.get("digits")().load("calib", 64)
    return MakeContext(
        model_name="digits_cnn",
        source=source,
        model_params=source.Params(),
        model=LoadedModel(weights="test", sha256="cache-integrity", module=DigitsCNN().eval()),
        input_shape=(1, 8, 8),
        calib=calib,
        fp32_onnx=lambda: None,
    )


@pytest.fixture(scope="module")
def eval_x() -> np.ndarray:
    x, _ = FAM.datasets.get("digits")().load("eval", 50)
    return x


def make_torch(ctx: Any, name: str, out: Path, **params: Any) -> Path:
    method = FAM.methods.get(name)()
    typed = method.Params(**{**STEPS.get(name, {}), **params})
    assert method.unsupported("torch", typed, ctx.source) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.make("torch", typed, ctx, out)
    return out


def open_torch(artifact: Path, backend: str = "torch") -> Any:
    from qbench.backends.torch_cuda import TorchCudaParams
    from qbench.backends.torch_eager import TorchParams

    params = TorchParams() if backend == "torch" else TorchCudaParams()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FAM.backends.get(backend)().open(artifact, "torch", 1, params)


def open_as_before(artifact: Path) -> Any:
    """The torch backend's open before this fix (a full unpickle): trusted test files only."""
    import torch

    from qbench.backends.torch_eager import example_args

    saved = torch.load(artifact, weights_only=False, map_location="cpu")
    source = FAM.models.get(saved["model"])()
    module = source.architecture(source.Params(**saved["model_params"]))
    method = FAM.methods.get(saved["method"])()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = method.rebuild_torch(
            module, example_args(saved), method.Params(**saved["method_params"])
        )
    # torchao's tensor subclasses replace the plain weights by assignment
    subclass = any(type(t).__module__.startswith("torchao") for t in saved["state_dict"].values())
    module.load_state_dict(saved["state_dict"], assign=subclass)
    return module.eval()


def test_every_torch_method_is_covered() -> None:
    assert {"fp32", "fp16", "bf16", "static_int8", "dynamic_int8", "qat", "mixed"} <= set(
        TORCH_METHODS
    )


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=lambda v: str(v).replace(" ", ""))
def test_torch_artifact_loads_weights_only_and_computes_as_before(
    torch_ctx: Any, eval_x: np.ndarray, tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    import torch

    artifact = make_torch(torch_ctx, name, tmp_path / f"{name}.pt", **params)
    torch.load(artifact, weights_only=True)  # no allow-list needed
    session = open_torch(artifact)
    before = open_as_before(artifact)
    with torch.inference_mode():
        expected = before(torch.as_tensor(eval_x, dtype=session.dtype)).float().numpy()
    np.testing.assert_array_equal(session.predict(eval_x), expected)


def write_malicious(artifact: Path, marker: Path) -> None:
    """torch.save over an artifact: the keys a qbench artifact has, a payload as state dict."""
    import torch

    saved = torch.load(artifact, weights_only=True)
    torch.save({**saved, "state_dict": Payload(marker)}, artifact)


def test_malicious_artifact_is_refused_and_runs_nothing(torch_ctx: Any, tmp_path: Path) -> None:
    import shutil

    import torch

    from qbench.backends.torch_eager import UnsafeArtifactError

    artifact = make_torch(torch_ctx, "fp32", tmp_path / "fp32.pt")
    marker = tmp_path / "MARKER"
    write_malicious(artifact, marker)

    with pytest.raises(UnsafeArtifactError) as info:
        open_torch(artifact)
    message = str(info.value)
    assert "\n" not in message and str(artifact) in message and "refused" in message
    assert "system" in message  # names what it would have called
    assert not marker.exists()

    # The control: the same file read as before the fix runs the command.
    live = tmp_path / "live.pt"
    shutil.copy(artifact, live)
    torch.load(live, weights_only=False)
    assert marker.exists()


def test_malicious_artifact_is_refused_by_torch_cuda(
    torch_ctx: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch_cuda loads through the CPU backend: refused there, before any GPU is needed."""
    import qbench.backends.torch_cuda as torch_cuda
    from qbench.backends.torch_eager import UnsafeArtifactError

    monkeypatch.setattr(torch_cuda, "cuda_unavailable_reason", lambda: None)
    artifact = make_torch(torch_ctx, "fp32", tmp_path / "fp32.pt")
    marker = tmp_path / "MARKER"
    write_malicious(artifact, marker)
    with pytest.raises(UnsafeArtifactError):
        open_torch(artifact, "torch_cuda")
    assert not marker.exists()


def test_a_file_that_is_not_an_artifact_is_refused(tmp_path: Path) -> None:
    import torch

    from qbench.backends.torch_eager import UnsafeArtifactError

    artifact = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], artifact)
    with pytest.raises(UnsafeArtifactError, match="holds a list"):
        open_torch(artifact)
    torch.save({"state_dict": {}}, artifact)
    with pytest.raises(UnsafeArtifactError, match="no model, model_params, method"):
        open_torch(artifact)


def test_a_method_that_saves_more_than_plain_data_fails_its_build(
    torch_ctx: Any, tmp_path: Path
) -> None:
    from qbench.methods.base import save_torch_artifact
    from qbench.params import NoParams

    marker = tmp_path / "MARKER"
    with pytest.raises(ValueError, match="weights-only load refuses"):
        save_torch_artifact(
            tmp_path / "x.pt", torch_ctx, "fp32", NoParams(), {"w": Payload(marker)}
        )
    assert not marker.exists()


def test_malicious_cached_artifact_is_rebuilt_never_run(
    cache: Path, torch_ctx: Any, eval_x: np.ndarray, tmp_path: Path
) -> None:
    """The reported attack end to end: a file written over a cached .pt."""
    counter = tmp_path / "count"

    def build(tmp: Path) -> None:
        with open(counter, "a") as fh:
            fh.write("built\n")
        make_torch(torch_ctx, "dynamic_int8", tmp)

    path, _ = cached_file("artifacts", KEY, ".pt", build)
    expected = open_torch(path).predict(eval_x)
    marker = tmp_path / "MARKER"
    write_malicious(path, marker)

    entry = cached_file("artifacts", KEY, ".pt", build)
    assert not entry.cached and entry.note and "sha256" in entry.note
    np.testing.assert_array_equal(open_torch(entry.path).predict(eval_x), expected)
    assert builds(counter) == 2 and not marker.exists()
