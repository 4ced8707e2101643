"""Loaded models: an ONNX Runtime session plus what it takes to turn request inputs into
its tensors and its tensors back into JSON-ready outputs.

onnxruntime, numpy and tokenizers are imported when a model loads, not when this module
does, so a function that serves no model (the `api` function) never pays for them.
"""

from __future__ import annotations

import math
import re
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    from stratoserve.declaration.schema import ModelSpec, RuntimeSpec


class InputError(ValueError):
    """Inputs of the wrong shape or type for the model: the client's mistake."""


class OverflowingInputError(InputError):
    """An input the model's arithmetic overflows on (found by running it); `index` counts
    within the inputs of that run."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"inputs[{index}]: values too large for this model (its probabilities overflow)"
        )
        self.index = index


class ModelUnavailableError(RuntimeError):
    """A declared model whose artifact cannot be loaded."""


class Runner(Protocol):
    def check(self, inputs: list[Any]) -> Any: ...

    def run(self, checked: Any) -> Any:
        """One output per input, JSON-serialisable by orjson (lists or numpy arrays);
        InputError where an input leaves the model nothing meaningful to answer."""
        ...


@dataclass(frozen=True)
class ModelKey:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class LoadedModel:
    key: ModelKey
    runner: Runner
    size_bytes: int
    load_ms: float
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    """The execution providers the session really uses, best first (CUDA can be asked for
    and still fall back to the CPU)."""


_GRAPH_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def session_options(runtime: RuntimeSpec) -> onnxruntime.SessionOptions:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = runtime.inter_op_threads
    options.enable_cpu_mem_arena = runtime.cpu_mem_arena
    options.graph_optimization_level = getattr(
        onnxruntime.GraphOptimizationLevel, _GRAPH_LEVELS[runtime.graph_optimization]
    )
    # Lambda's /tmp-less, log-heavy environment: keep ORT's own warnings out of the logs.
    options.log_severity_level = 3
    return options


CPU = ["CPUExecutionProvider"]


def load_model(
    key: ModelKey,
    spec: ModelSpec,
    models_dir: Path,
    runtime: RuntimeSpec,
    *,
    providers: list[str] = CPU,
) -> LoadedModel:
    """Load one model version. `providers` are ONNX Runtime's, in order of preference (the
    GPU layer puts CUDAExecutionProvider first)."""
    version = spec.versions[key.version]
    artifact = models_dir / version.artifact
    if not artifact.is_file():
        raise ModelUnavailableError(
            f"model {key}: artifact {artifact} not found; "
            f"build it with `stratoserve models build {key.name}`"
        )
    import onnxruntime

    # Timed after the import: the first load also pays for importing onnxruntime, which
    # the cold-start figures count as imports, not as loading this model.
    started = time.perf_counter()
    session = onnxruntime.InferenceSession(
        str(artifact), sess_options=session_options(runtime), providers=providers
    )
    runner: Runner
    if spec.task == "classify":
        runner = Classifier(session)
    else:
        assert version.tokenizer is not None  # the loader guarantees it for embed models
        runner = Embedder(
            session,
            _tokenizer(models_dir / version.tokenizer),
            one_text_per_run=quantizes_activations(artifact),
            max_chars=spec.max_text_chars,
        )
    load_ms = (time.perf_counter() - started) * 1000
    return LoadedModel(
        key=key,
        runner=runner,
        size_bytes=artifact.stat().st_size,
        load_ms=load_ms,
        providers=tuple(session.get_providers()),
    )


# For a tokenizer.json that brings no truncation of its own: BERT-family position tables
# hold 512 tokens, and a longer input would fail inside the graph.
DEFAULT_MAX_TOKENS = 512


def _tokenizer(path: Path) -> Tokenizer:
    """The tokenizer as built (the recipe sets truncation and padding), with batch padding
    and a truncation limit added only where a bring-your-own file has none."""
    if not path.is_file():
        raise ModelUnavailableError(f"tokenizer {path} not found; run `stratoserve models build`")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.truncation is None:
        tokenizer.enable_truncation(max_length=DEFAULT_MAX_TOKENS)
    if tokenizer.padding is None or tokenizer.padding.get("length") is not None:
        # Pad to the longest text of the batch, never to a fixed length.
        pad_token = "[PAD]" if tokenizer.token_to_id("[PAD]") is not None else "<pad>"
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad_token) or 0, pad_token=pad_token)
    return tokenizer


CHARS_PER_TOKEN = 32
"""Where a long text is cut before tokenizing, in characters per token of the tokenizer's
max_length. Prose runs 4 to 5 characters a WordPiece token, so the cut part nearly always
fills max_length; when it does not (long runs of spaces or of combining marks), the whole
text is tokenized, as before: it is within max_text_chars."""

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
"""CJK ideographs BertNormalizer (handle_chinese_chars) surrounds with spaces: each is a word
of its own. Starters without a decomposition, so normalizing never moves a mark across one."""


@dataclass(frozen=True)
class TextCut:
    """Cuts a text to the part its tokenizer can use: a prefix that ends just before a
    boundary character, and yields the same token ids as the whole text.

    Why the ids are the same. A boundary is ASCII whitespace or ASCII punctuation (or a CJK
    ideograph, with handle_chinese_chars) that no added token contains. BertNormalizer maps
    each character on its own (clean_text, handle_chinese_chars, lowercase), except NFD
    (strip_accents), which reorders marks only between two starters; a boundary is a starter
    and normalizes to itself (or to a space). BertPreTokenizer always ends a word before a
    boundary, the model tokenizes word by word, and no added token's match can span a
    boundary. So tokens(text) = tokens(prefix) + tokens(rest). Right truncation keeps the
    first max_length - specials tokens: when the prefix alone fills max_length, those are the
    prefix's. `fills` says whether it did; when not, the caller tokenizes the whole text.

    Only for the pipeline that argument covers (`for_tokenizer`): any other tokenizer keeps
    whole texts."""

    max_length: int
    """The tokenizer's truncation length (special tokens included)."""
    chars: int
    """Texts longer than this are cut, at the last boundary at or before it."""
    boundary: re.Pattern[str]

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> TextCut | None:
        from tokenizers import normalizers, pre_tokenizers

        truncation = tokenizer.truncation
        normalizer = tokenizer.normalizer
        if (
            truncation is None
            or truncation.get("direction", "right") != "right"
            or not isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
            or not (normalizer is None or isinstance(normalizer, normalizers.BertNormalizer))
        ):
            return None
        added = tokenizer.get_added_tokens_decoder().values()
        if any(token.lstrip or token.rstrip for token in added):
            return None  # a token that takes the spaces beside it could reach across a cut
        in_added = {character for token in added for character in token.content}
        ascii_boundaries = (set(string.punctuation) | set(" \t\n\r")) - in_added
        cjk = isinstance(normalizer, normalizers.BertNormalizer) and normalizer.handle_chinese_chars
        characters = "".join(re.escape(character) for character in sorted(ascii_boundaries))
        boundary = re.compile(f"[{characters}{_CJK if cjk else ''}]")
        max_length = int(truncation["max_length"])
        return cls(max_length=max_length, chars=max_length * CHARS_PER_TOKEN, boundary=boundary)

    def cut(self, text: str) -> str:
        """The text up to its last boundary within `chars`; the whole text when it is not
        longer, or has no boundary there."""
        if len(text) <= self.chars:
            return text
        # Searched backwards from `chars`: text[end] is the boundary the prefix stops before.
        found = self.boundary.search(text[self.chars :: -1])
        if found is None:
            return text
        return text[: self.chars - found.start()]

    def fills(self, attention_mask: list[int]) -> bool:
        """Whether a cut text's encoding reached max_length (its padding aside)."""
        return attention_mask.count(1) >= self.max_length


class Classifier:
    """A tabular classifier: each input is a row of numbers; outputs label + probabilities."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        model_input = session.get_inputs()[0]
        self._input_name = model_input.name
        width = model_input.shape[-1]
        self.features = width if isinstance(width, int) else None

    def check(self, inputs: list[Any]) -> np.ndarray:
        import numpy as np

        check_rows(inputs, self.features)
        with np.errstate(over="ignore"):  # overflow is checked just below, per row
            rows = np.asarray(inputs, dtype=np.float32)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            index = int(np.argmin(finite))
            raise InputError(f"inputs[{index}]: a value is too large for float32 (max 3.4e38)")
        return rows

    def run(self, checked: np.ndarray) -> list[dict[str, Any]]:
        import numpy as np

        labels, probabilities = self._session.run(None, {self._input_name: checked})
        # Values float32 can hold may still overflow the model's own arithmetic: its
        # probabilities come out NaN and its label means nothing. That is the input's fault.
        finite = np.isfinite(probabilities).all(axis=1)
        if not finite.all():
            raise OverflowingInputError(int(np.argmin(finite)))
        return [
            {"label": int(label), "probabilities": row}
            for label, row in zip(labels, probabilities, strict=True)
        ]


_GRAPH_HEAD_BYTES = 2 << 20


def quantizes_activations(artifact: Path) -> bool:
    """Whether the graph quantizes activations on the fly (DynamicQuantizeLinear, as
    onnxruntime's dynamic quantization writes it). Its scale is computed over the whole
    input tensor, so in a batch every text's result depends on the others (and on their
    padding): by as much as 0.05 of cosine on MiniLM int8 (bench/worker_throughput.py)."""
    # ONNX writes a graph's nodes before its initializers (protobuf field order), so the
    # op types sit at the head of the file: no need to read a large model's weights.
    with artifact.open("rb") as file:
        return b"DynamicQuantizeLinear" in file.read(_GRAPH_HEAD_BYTES)


class Embedder:
    """A sentence embedder: texts in, L2-normalised vectors out (pooling is in the graph).

    With `one_text_per_run` each text is run on its own, so a text's embedding never
    depends on what else is in the request or the job batch (see quantizes_activations):
    the same text gets the same vector inline, in any job, alone or in company.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        tokenizer: Tokenizer,
        *,
        one_text_per_run: bool = False,
        max_chars: int | None = None,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._input_names = {model_input.name for model_input in session.get_inputs()}
        self.one_text_per_run = one_text_per_run
        self.max_chars = max_chars
        self._cut = TextCut.for_tokenizer(tokenizer)

    def check(self, inputs: list[Any]) -> list[str]:
        return check_texts(inputs, max_chars=self.max_chars)

    def encode(self, texts: list[str]) -> list[Any]:
        """The texts' encodings, as tokenizing each whole text and truncating gives them,
        from only the start of each long text where that is enough (TextCut)."""
        if self._cut is None:
            return self._tokenizer.encode_batch(texts)
        cut = [self._cut.cut(text) for text in texts]
        encodings = self._tokenizer.encode_batch(cut)
        short = [
            index
            for index, (text, part) in enumerate(zip(texts, cut, strict=True))
            if part is not text and not self._cut.fills(encodings[index].attention_mask)
        ]
        if short:
            for index in short:
                cut[index] = texts[index]
            # Again as one batch: padding is to the batch's longest.
            encodings = self._tokenizer.encode_batch(cut)
        return encodings

    def run(self, checked: list[str]) -> np.ndarray:
        import numpy as np

        if self.one_text_per_run and len(checked) > 1:
            return np.concatenate(
                [self._run(checked[index : index + 1]) for index in range(len(checked))]
            )
        return self._run(checked)

    def _run(self, checked: list[str]) -> np.ndarray:
        import numpy as np

        encodings = self.encode(checked)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        (embeddings,) = self._session.run(None, feeds)
        return embeddings  # type: ignore[no-any-return]  # an ndarray: orjson writes it as is


FLOAT32_MAX = 3.4028234663852886e38


def check_rows(inputs: list[Any], features: int | None = None) -> list[Any]:
    """Rows of numbers (of `features` each, when the model's width is known)."""
    for index, row in enumerate(inputs):
        if not isinstance(row, list) or not all(_is_number(value) for value in row):
            raise InputError(f"inputs[{index}]: expected a list of numbers")
        if features is not None and len(row) != features:
            raise InputError(f"inputs[{index}]: expected {features} numbers, got {len(row)}")
        if any(abs(value) > FLOAT32_MAX for value in row):
            raise InputError(f"inputs[{index}]: a value is too large for float32 (max 3.4e38)")
    return inputs


def check_texts(inputs: list[Any], max_chars: int | None = None) -> list[str]:
    """Non-empty strings, of at most `max_chars` characters each (models.<name>.max_text_chars)."""
    for index, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InputError(f"inputs[{index}]: expected a string, got {_json_type(text)}")
        if max_chars is not None and len(text) > max_chars:
            raise InputError(f"inputs[{index}]: text longer than {max_chars} characters")
        if not text.strip():
            raise InputError(f"inputs[{index}]: text is empty")
    return inputs


INPUT_CHECKS = {"classify": check_rows, "embed": check_texts}
"""What a task's inputs must look like, checked without loading the model (a job is
checked when it is submitted, by a function that has no model loaded)."""


def check_inputs(model: ModelSpec, inputs: list[Any]) -> list[Any]:
    """The declared model's checks (its task's, with its limits), without loading it."""
    if model.task == "embed":
        return check_texts(inputs, max_chars=model.max_text_chars)
    return check_rows(inputs)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
