"""Tiny random-initialised transformers built from a config in a folder (no download): a BERT
encoder, a llama causal LM and a BERT sequence classifier, each with a word-level tokenizer
made here, and small labelled / running texts for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _words(text: str) -> list[str]:
    return text.split()


COMMON = _words("the a of to and in is it that for on with as was by at from this be are or an")
TOPICS = {
    "business": _words("market shares bank profit growth price economy sales trade company"),
    "sport": _words("game match team player goal win cup season coach"),
    "tech": _words("phone software computer internet users mobile network digital technology"),
}
OTHER = _words("which film music award star actor band album show election minister party "
               "vote government labour tory policy data")  # fmt: skip
WORDS = [*COMMON, *(w for words in TOPICS.values() for w in words), *OTHER]


def tokenizer(folder: Path) -> None:
    """A word-level tokenizer of WORDS ([CLS] text [SEP]), saved as a transformers one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(folder))


def vocab_size() -> int:
    return len(WORDS) + 5


def _bert(layers: int, **extra: int) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size(), hidden_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                      **extra)  # fmt: skip


def encoder(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(_bert(2)).eval().save_pretrained(str(folder))
    tokenizer(folder)
    return folder


def classifier(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    BertForSequenceClassification(_bert(1, num_labels=3)).eval().save_pretrained(str(folder))
    tokenizer(folder)
    return folder


def causal_lm(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights: distributions far from uniform, so KLD means something
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    model.save_pretrained(str(folder))
    tokenizer(folder)
    return folder


def documents(folder: Path, per_class: int = 20, seed: int = 0) -> Path:
    """A folder of class folders of .txt documents, each mostly its topic's words."""
    import random

    rng = random.Random(seed)
    common = COMMON
    for topic, words in TOPICS.items():
        (folder / topic).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            text = " ".join(
                rng.choice(words if rng.random() < 0.6 else common)
                for _ in range(rng.randint(12, 30))
            )
            (folder / topic / f"{i:03d}.txt").write_text(text)
    return folder


def running_text(path: Path, words: int = 3000, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(words)))
    return path
