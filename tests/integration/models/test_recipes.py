"""Model recipes end to end: real builds into tmp folders, checked through onnxruntime."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tokenizers import Tokenizer

from models.recipes import RECIPES, UnknownRecipeError, load_recipe
from models.recipes.base import RecipeError, RecipeResult

if TYPE_CHECKING:
    from pathlib import Path

PAIR = ("A man is eating food.", "A man is eating a piece of bread.")
SENTENCES = (
    *PAIR,
    "The weather in Lisbon is mild in winter.",
    "Transformers turned sequence modelling on its head.",
    "Hello there!",
    "Please cancel my subscription and refund the last payment.",
)
LONG_TEXT = " ".join(["word"] * 300)


@dataclass
class Build:
    out_dir: Path
    result: RecipeResult
    lines: list[str] = field(default_factory=list)


class Embedder:
    """What a runtime does with a built version: its tokenizer.json plus its model.onnx."""

    def __init__(self, out_dir: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
        self.session = ort.InferenceSession(
            str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        vectors: np.ndarray = self.session.run(["sentence_embedding"], feeds)[0]
        return vectors


def _build(recipe: str, params: dict[str, Any], out_dir: Path, work_dir: Path) -> Build:
    lines: list[str] = []
    result = load_recipe(recipe).build(params, out_dir, work_dir, lines.append)
    return Build(out_dir, result, lines)


STALE_ENTRY = "minilm/0123456789abcdef"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("work")
    # A cache entry left by an older recipe or library version, to be pruned by the build.
    (work / STALE_ENTRY).mkdir(parents=True)
    (work / STALE_ENTRY / "optimised.onnx").write_bytes(b"stale")
    return work


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory, work_dir: Path) -> Build:
    return _build("digits", {}, tmp_path_factory.mktemp("digits"), work_dir)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, work_dir: Path) -> Build:
    return _build("minilm", {"precision": "fp32"}, tmp_path_factory.mktemp("fp32"), work_dir)


@pytest.fixture(scope="module")
def int8(fp32: Build, tmp_path_factory: pytest.TempPathFactory, work_dir: Path) -> Build:
    # Depends on fp32 so the shared work_dir already holds the exported graph.
    return _build("minilm", {"precision": "int8"}, tmp_path_factory.mktemp("int8"), work_dir)


@pytest.fixture(scope="module")
def embed_fp32(fp32: Build) -> Embedder:
    return Embedder(fp32.out_dir)


@pytest.fixture(scope="module")
def embed_int8(int8: Build) -> Embedder:
    return Embedder(int8.out_dir)


# -- registry ---------------------------------------------------------------------------


def test_registry_loads_every_recipe() -> None:
    for name in RECIPES:
        assert callable(load_recipe(name).build)


def test_unknown_recipe_lists_known_ones() -> None:
    with pytest.raises(UnknownRecipeError, match="digits, minilm") as caught:
        load_recipe("resnet")
    assert isinstance(caught.value, ValueError)


# -- digits -----------------------------------------------------------------------------


def test_digits_classifies_held_out_digits(digits: Build) -> None:
    x, y = load_digits(return_X_y=True)
    _, x_test, _, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    session = ort.InferenceSession(
        str(digits.out_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    labels, probabilities = session.run(
        ["label", "probabilities"], {"input": x_test.astype(np.float32)}
    )
    assert labels.dtype == np.int64
    assert probabilities.shape == (len(y_test), 10)
    assert np.mean(labels == y_test) >= 0.95
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), labels)


def test_digits_accepts_any_batch_size(digits: Build) -> None:
    session = ort.InferenceSession(
        str(digits.out_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x, y = load_digits(return_X_y=True)
    for batch in (1, 7):
        labels, probabilities = session.run(None, {"input": x[:batch].astype(np.float32)})
        assert labels.shape == (batch,)
        assert probabilities.shape == (batch, 10)
    assert labels[0] == y[0]


def test_digits_artifact_is_tiny_and_metrics_recorded(digits: Build) -> None:
    assert set(digits.result.files) == {"model.onnx"}
    assert digits.result.files["model.onnx"].stat().st_size < 16_000
    metrics = digits.result.metrics
    assert float(metrics["accuracy"]) >= 0.95
    assert metrics["onnx_agreement"] == 1.0
    assert float(metrics["max_probability_diff"]) < 1e-4
    assert metrics["test_size"] == 450
    assert metrics["opset"] == 17


@pytest.mark.parametrize(
    ("params", "named"),
    [({"bogus": 1}, "bogus"), ({"classifier": "svm"}, "classifier"), ({"seed": "x"}, "seed")],
)
def test_digits_rejects_bad_params(
    params: dict[str, Any], named: str, tmp_path: Path, work_dir: Path
) -> None:
    with pytest.raises(RecipeError, match=named):
        _build("digits", params, tmp_path, work_dir)
    assert not (tmp_path / "model.onnx").exists()


# -- minilm -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"precision": "fp32", "bogus": 1}, "bogus"),
        ({}, "precision"),
        ({"precision": "fp16"}, "precision"),
        ({"precision": "fp32", "max_tokens": 4096}, "max_tokens"),
    ],
)
def test_minilm_rejects_bad_params(
    params: dict[str, Any], named: str, tmp_path: Path, work_dir: Path
) -> None:
    with pytest.raises(RecipeError, match=named):
        _build("minilm", params, tmp_path, work_dir)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_minilm_files_are_self_contained(precision: str, request: pytest.FixtureRequest) -> None:
    build: Build = request.getfixturevalue(precision)
    assert sorted(path.name for path in build.out_dir.iterdir()) == ["model.onnx", "tokenizer.json"]
    assert build.result.files == {
        "model.onnx": build.out_dir / "model.onnx",
        "tokenizer.json": build.out_dir / "tokenizer.json",
    }
    model = onnx.load(str(build.out_dir / "model.onnx"), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["sentence_embedding"]


def test_int8_is_about_four_times_smaller(fp32: Build, int8: Build) -> None:
    fp32_size = (fp32.out_dir / "model.onnx").stat().st_size
    int8_size = (int8.out_dir / "model.onnx").stat().st_size
    assert fp32_size > 80_000_000
    assert int8_size < fp32_size / 3


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_embeddings_have_shape_and_unit_norm(
    precision: str, request: pytest.FixtureRequest
) -> None:
    embed: Embedder = request.getfixturevalue(f"embed_{precision}")
    vectors = embed(list(SENTENCES))
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_fp32_pair_cosine_matches_reference(embed_fp32: Embedder, fp32: Build) -> None:
    first, second = embed_fp32(list(PAIR))
    cosine = float(first @ second)
    assert 0.74 <= cosine <= 0.77
    assert cosine == pytest.approx(float(fp32.result.metrics["pair_cosine"]), abs=1e-5)


def test_int8_agrees_with_fp32(embed_fp32: Embedder, embed_int8: Embedder) -> None:
    # int8 one text at a time, as the runtime runs it: dynamic quantization scales a batch as
    # a whole, so a padded batch moves each vector (docs/ARCHITECTURE.md, "int8 embeddings").
    int8 = np.concatenate([embed_int8([text]) for text in SENTENCES])
    cosines = np.sum(embed_fp32(list(SENTENCES)) * int8, axis=1)
    assert cosines.min() >= 0.97


def test_padding_does_not_change_fp32_vectors(embed_fp32: Embedder) -> None:
    alone = embed_fp32([PAIR[0]])[0]
    batched = embed_fp32([PAIR[0], SENTENCES[3] * 8, "Hi"])
    np.testing.assert_allclose(batched[0], alone, atol=1e-5)
    np.testing.assert_allclose(batched[2], embed_fp32(["Hi"])[0], atol=1e-5)


def test_long_text_is_truncated_to_max_tokens(embed_fp32: Embedder) -> None:
    full = Tokenizer.from_str(embed_fp32.tokenizer.to_str())
    full.no_truncation()
    assert len(full.encode(LONG_TEXT).ids) > 300
    assert len(embed_fp32.tokenizer.encode(LONG_TEXT).ids) == 256
    vector = embed_fp32([LONG_TEXT, "short"])[0]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_tokenizer_pads_to_longest_in_batch(embed_fp32: Embedder) -> None:
    short, longer = embed_fp32.tokenizer.encode_batch(["Hi", "A somewhat longer input here."])
    assert len(short.ids) == len(longer.ids) < 128
    assert short.ids[-1] == 0
    assert short.tokens[-1] == "[PAD]"
    assert short.attention_mask[-1] == 0


def test_minilm_parity_metrics_recorded(fp32: Build, int8: Build) -> None:
    assert float(fp32.result.metrics["cosine_min"]) >= 0.999
    assert float(int8.result.metrics["cosine_min"]) >= 0.97
    for build, precision in ((fp32, "fp32"), (int8, "int8")):
        metrics = build.result.metrics
        assert metrics["precision"] == precision
        assert metrics["max_tokens"] == 256
        assert metrics["longest_tokens"] == 256  # a parity sentence exercised truncation
        assert int(metrics["sentences"]) >= 20
        assert "Attention=6" in str(metrics["fusions"])


def test_int8_reuses_the_cached_export(fp32: Build, int8: Build) -> None:
    for step in ("exporting", "torch reference"):
        assert any(step in line for line in fp32.lines)
        assert not any(step in line for line in int8.lines)
    assert any("reusing" in line for line in int8.lines)


def test_build_prunes_stale_cache_entries(fp32: Build, work_dir: Path) -> None:
    assert not (work_dir / STALE_ENTRY).exists()
    assert len(list(work_dir.glob("minilm/*/optimised.onnx"))) == 1


def test_ort_fallback_optimiser_yields_equivalent_graph(
    work_dir: Path, embed_fp32: Embedder
) -> None:
    from models.recipes import minilm

    (exported,) = work_dir.glob("minilm/*/exported.onnx")
    model = minilm._ort_offline_optimise(exported)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    encodings = embed_fp32.tokenizer.encode_batch(list(SENTENCES))
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    (vectors,) = session.run(None, feeds)
    np.testing.assert_allclose(vectors, embed_fp32(list(SENTENCES)), atol=1e-4)


def test_failed_parity_leaves_no_artifact(
    fp32: Build, work_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.recipes import minilm_parity

    monkeypatch.setitem(minilm_parity.MIN_COSINE, "fp32", 1.01)  # unreachable: the check must fail
    with pytest.raises(RecipeError, match="cosine"):
        _build("minilm", {"precision": "fp32"}, tmp_path, work_dir)
    assert list(tmp_path.iterdir()) == []


def test_quantize_drops_only_the_preprocessing_advice(
    fp32: Build, work_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from models.recipes import minilm

    root = logging.getLogger()
    filters = list(root.filters)
    (optimised,) = work_dir.glob("minilm/*/optimised.onnx")
    with caplog.at_level(logging.WARNING):
        minilm._quantize(optimised, tmp_path / "int8.onnx")
        logging.warning("%s: logged after quantizing", minilm.PREPROCESS_ADVICE)
    assert (tmp_path / "int8.onnx").stat().st_size > 0
    assert root.filters == filters
    # Only the line logged after the call remains: the filter was there during it alone.
    advice = [r.getMessage() for r in caplog.records if minilm.PREPROCESS_ADVICE in r.getMessage()]
    assert advice == [f"{minilm.PREPROCESS_ADVICE}: logged after quantizing"]
