"""MiniLM parity: torch reference embeddings and the check that a built graph matches them.

The reference runs sentence-transformers' computation in torch (SDPA attention, unpadded
single sentences); the ONNX side runs through the runtime's own ``Embedder``, so the
build checks exactly the tokenize-and-run path that ships. torch, numpy and onnxruntime
are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.runtime.models import Embedder, quantizes_activations
from models.recipes.base import RecipeError, atomic_target

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy as np
    import torch
    from tokenizers import Tokenizer

    from models.recipes.base import ProgressFn

MIN_COSINE = {"fp32": 0.999, "int8": 0.97}

PAIR = ("A man is eating food.", "A man is eating a piece of bread.")
_LONG_PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based inks and a wooden screw press "
    "adapted from wine making. Within a few decades print shops had spread to more than "
    "two hundred European cities, books became cheaper by an order of magnitude, and "
    "literacy, scholarship and religious debate were transformed. Historians still argue "
    "about how quickly these changes happened, which regions benefited first, and "
    "whether the press caused the Reformation or merely accelerated movements that were "
    "already under way. What is clear is that standardised texts made it far easier to "
    "compare, correct and cite sources, a habit on which modern science came to depend."
)
# Deliberately varied: short, long, code, numbers, non-English, and two texts longer
# than the package's baked-in 128-token limit (one beyond 256) to prove truncation.
PARITY_SENTENCES: tuple[str, ...] = (
    *PAIR,
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "I absolutely loved this movie, the acting was superb!",
    "This product broke after two days; I want a refund.",
    "Quantum entanglement links the states of two particles across any distance.",
    "def add(a: int, b: int) -> int: return a + b",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "The invoice total is $1,234.56, due on 2025-03-31.",
    "Il pleut beaucoup à Paris aujourd'hui.",
    "Der Zug nach Berlin hat zehn Minuten Verspätung.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "A cat is sleeping on the warm windowsill.",
    "🙂 emoji and UPPERCASE and punctuation!!! ???",
    "The committee postponed the vote until next week because several members were absent.",
    "Running a marathon requires months of consistent training and careful nutrition.",
    "GPU memory bandwidth often limits transformer inference more than raw compute.",
    _LONG_PARAGRAPH,
    f"{_LONG_PARAGRAPH} {_LONG_PARAGRAPH}",
)


def reference_vectors(
    model_path: Path, tokenizer: Tokenizer, target: Path, progress: ProgressFn
) -> np.ndarray:
    """Torch embeddings of the parity sentences, cached so int8 after fp32 skips torch."""
    import numpy as np

    if target.exists():
        vectors: np.ndarray = np.load(target)
        return vectors
    progress("computing torch reference embeddings")
    vectors = _torch_embed(model_path, tokenizer, PARITY_SENTENCES)
    with atomic_target(target) as temp:
        np.save(temp, vectors)
    return vectors


def check(
    model: Path, tokenizer: Tokenizer, reference: np.ndarray, precision: str, progress: ProgressFn
) -> dict[str, float | int | str]:
    """Embed the parity sentences with ``model``; raise below ``MIN_COSINE``, else return
    the figures for the manifest."""
    import numpy as np
    import onnxruntime as ort

    progress(f"checking {precision} parity on {len(PARITY_SENTENCES)} sentences")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    # As the runtime runs it: a graph that quantizes activations runs one text at a time.
    embedder = Embedder(session, tokenizer, one_text_per_run=quantizes_activations(model))
    # One padded batch through ONNX against unpadded single sentences through torch:
    # this checks padding invariance and truncation along with the numbers. The pair,
    # run again on its own, proves another batch size and sequence length work too.
    onnx_vectors = embedder.run(list(PARITY_SENTENCES))
    pair_vectors = embedder.run(list(PAIR))
    cosines = np.concatenate(
        [
            np.sum(onnx_vectors * reference, axis=1),
            np.sum(pair_vectors * reference[: len(PAIR)], axis=1),
        ]
    )
    cosine_min = float(cosines.min())
    if cosine_min < MIN_COSINE[precision]:
        worst = (*PARITY_SENTENCES, *PAIR)[int(cosines.argmin())][:60]
        raise RecipeError(
            f"{precision} cosine {cosine_min:.5f} < {MIN_COSINE[precision]} on {worst!r}"
        )
    longest = max(len(encoding.ids) for encoding in tokenizer.encode_batch(list(PARITY_SENTENCES)))
    return {
        "cosine_min": cosine_min,
        "cosine_mean": float(cosines.mean()),
        "pair_cosine": float(pair_vectors[0] @ pair_vectors[1]),
        "sentences": len(PARITY_SENTENCES),
        "longest_tokens": longest,
    }


def _torch_embed(model_path: Path, tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    import numpy as np
    import torch
    from transformers import AutoModel

    quiet_transformers()
    # Default (SDPA) attention: an independent code path from the eager graph we export.
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True).eval()
    vectors = []
    with torch.inference_mode():
        for text in texts:
            encoding = tokenizer.encode(text)
            input_ids = torch.tensor([encoding.ids])
            attention_mask = torch.tensor([encoding.attention_mask])
            hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            vectors.append(mean_pool_normalise(hidden, attention_mask)[0].numpy())
    return np.stack(vectors)


def mean_pool_normalise(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling followed by its Normalize module; the exported
    graph ends with the same function."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    # Progress goes through the callback; tqdm bars would garble the CLI output.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
