"""Embedder.encode cuts long texts before tokenizing (functions/runtime/models.py,
TextCut): the token ids must be today's, tokenizing the whole text and truncating, for
every text. Checked on the built MiniLM tokenizer, as built (256 tokens) and with a short
truncation that makes most generated texts long enough to be cut."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.runtime.models import CHARS_PER_TOKEN, Embedder, TextCut

if TYPE_CHECKING:
    from pathlib import Path

    from tokenizers import Tokenizer

    from stratoserve.declaration import Declaration


class _NoInputs:
    """An ONNX session stand-in: encode() never runs the graph."""

    def get_inputs(self) -> list[Any]:
        return []


@pytest.fixture(scope="module")
def tokenizer_file(built_models: Path, declaration: Declaration) -> Path:
    tokenizer = declaration.models["embed"].versions["2"].tokenizer
    assert tokenizer is not None
    return built_models / tokenizer


def _tokenizer(path: Path, max_length: int | None = None) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    if max_length is not None:
        tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def _embedder(tokenizer: Tokenizer) -> Embedder:
    return Embedder(_NoInputs(), tokenizer)  # type: ignore[arg-type,unused-ignore]


def _today(tokenizer: Tokenizer, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """What the runtime fed the model before: every text tokenized whole, then truncated."""
    return [(e.ids, e.attention_mask) for e in tokenizer.encode_batch(texts)]


def _cut(embedder: Embedder, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    return [(e.ids, e.attention_mask) for e in embedder.encode(texts)]


# Pieces of text that stress each step of BERT's pipeline: punctuation and brackets (the
# added tokens' [ and ]), spelled-out added tokens, whitespace a tokenizer removes or keeps
# (NBSP, ideographic space, the control characters Python calls space), combining marks
# after boundaries, final sigma, dotted capital I, CJK with and without spaces, emoji with
# joiners and skin tones, Hangul (NFD grows it), words over WordPiece's 100 characters.
PIECES = [
    "the", "Quick", "brown", "fox", "tokenization", "unaffable", "x", "A",
    " ", "  ", "\t", "\n", "\r\n", " " * 40, "\xa0", "\u3000", "\x1c", "\x1f", "\x85",
    ".", ",", "!", "?", "'", '"', "-", "...", "(", ")", "[", "]", "{", "}", "#", "@", "/",
    "[MASK]", "[SEP]", "[CLS", "MASK]", "[PAD]",
    "\u0301", "\u0308\u0323", "e\u0301", "\u0130", "ΟΔΟΣ", "Σ", "ς",
    "日本語", "中", "文", "字", "한국어", "ｶﾀｶﾅ", "ひらがな",
    "👍", "👨\u200d👩\u200d👧", "👍🏽", "\u200b", "\ufeff", "\ufffd", "\x00",
    "a" * 101, "b" * 150, "Ünïcödé" * 20, "ab" * 60 + ".",
]  # fmt: skip

texts = st.lists(st.sampled_from(PIECES), min_size=0, max_size=400).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(texts, min_size=1, max_size=4))
def test_cut_texts_tokenize_as_whole_texts_do(tokenizer_file: Path, batch: list[str]) -> None:
    # 12 tokens: texts over 384 characters are cut, most of those generated here.
    tokenizer = _tokenizer(tokenizer_file, max_length=12)
    assert _cut(_embedder(tokenizer), batch) == _today(tokenizer, batch)


@pytest.mark.parametrize("seed", range(3))
def test_long_real_texts_as_built(tokenizer_file: Path, seed: int) -> None:
    import random

    tokenizer = _tokenizer(tokenizer_file)
    embedder = _embedder(tokenizer)
    generator = random.Random(seed)
    words = (__doc__ or "").split() + PIECES
    batch = [
        " ".join(generator.choice(words) for _ in range(generator.randint(10, 40_000)))
        for _ in range(4)
    ]
    batch.append("a" * 20_000)  # one word: no boundary, tokenized whole
    batch.append(" " * 9_000 + "late words after a long run of spaces")  # cut part too short
    batch.append("中" * 30_000)
    assert _cut(embedder, batch) == _today(tokenizer, batch)


def test_a_long_text_is_cut_to_what_max_tokens_can_use(tokenizer_file: Path) -> None:
    tokenizer = _tokenizer(tokenizer_file)
    cut = TextCut.for_tokenizer(tokenizer)
    assert cut is not None
    assert cut.chars == 256 * CHARS_PER_TOKEN
    text = "a quick brown fox jumps over the lazy dog. " * 25_000  # 1.1 MB
    part = cut.cut(text)
    assert len(part) <= cut.chars
    assert text.startswith(part)
    assert text[len(part)] in " ."

    embedder = _embedder(tokenizer)
    started = time.perf_counter()
    (encoding,) = embedder.encode([text])
    cut_s = time.perf_counter() - started
    started = time.perf_counter()
    (whole,) = tokenizer.encode_batch([text])
    whole_s = time.perf_counter() - started
    assert encoding.ids == whole.ids
    assert cut_s * 10 < whole_s  # ~3 ms against ~1 s


def test_another_pipeline_keeps_whole_texts(tokenizer_file: Path) -> None:
    from tokenizers import pre_tokenizers

    left = _tokenizer(tokenizer_file)
    left.enable_truncation(max_length=256, direction="left")
    whitespace = _tokenizer(tokenizer_file)
    whitespace.pre_tokenizer = pre_tokenizers.Whitespace()
    assert TextCut.for_tokenizer(left) is None
    assert TextCut.for_tokenizer(whitespace) is None
