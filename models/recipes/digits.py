"""Digits recipe: a tiny scikit-learn classifier on the bundled 8x8 digits, shipped as ONNX.

Graph contract: input ``input`` float32 [batch, 64] of raw pixel values 0..16;
outputs ``label`` int64 [batch] and ``probabilities`` float32 [batch, 10].
The orchestrator fingerprints this file, params and the SOURCE_PACKAGES versions; the
data set ships inside scikit-learn, so its version covers the data too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.recipes.base import (
    RecipeError,
    RecipeResult,
    atomic_target,
    check_params,
    int_param,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import numpy as np
    import onnx
    from sklearn.pipeline import Pipeline

    from models.recipes.base import ProgressFn

SOURCE_PACKAGES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime")
ALLOWED_PARAMS = frozenset({"classifier", "seed"})
CLASSIFIERS = ("logistic_regression",)
TEST_SIZE = 0.25
MIN_ACCURACY = 0.95
# Every held-out label must survive conversion: the test split has ~450 rows, so any
# fractional threshold above 0.998 already demands all of them, and float32 inference
# moves probabilities by ~1e-6, far below the margin of any non-degenerate sample.
MIN_AGREEMENT = 1.0
MAX_PROBABILITY_DIFF = 1e-4
OPSET = 17
ML_OPSET = 3
N_FEATURES = 64
INPUT_NAME = "input"
OUTPUT_NAMES = ("label", "probabilities")


@dataclass(frozen=True)
class _Split:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def build(
    params: Mapping[str, Any], out_dir: Path, work_dir: Path, progress: ProgressFn
) -> RecipeResult:
    """Train, convert, verify and write ``out_dir/model.onnx``; ``work_dir`` is unused."""
    del work_dir  # training takes under a second, nothing worth caching
    seed = _parse_params(params)
    progress("loading scikit-learn digits")
    split = _load_split(seed)
    progress("training logistic regression")
    pipeline = _train(split)
    accuracy = float(pipeline.score(split.x_test, split.y_test))
    if accuracy < MIN_ACCURACY:
        raise RecipeError(f"held-out accuracy {accuracy:.4f} below {MIN_ACCURACY}")
    progress("converting to ONNX")
    model = _convert(pipeline)
    progress("checking ONNX against scikit-learn")
    agreement, prob_diff = _parity(model, pipeline, split.x_test)
    target = out_dir / "model.onnx"
    with atomic_target(target) as temp:
        temp.write_bytes(model.SerializeToString())
    return RecipeResult(
        files={"model.onnx": target},
        metrics={
            "accuracy": accuracy,
            "onnx_agreement": agreement,
            "max_probability_diff": prob_diff,
            "test_size": len(split.y_test),
            "opset": OPSET,
        },
    )


def _parse_params(params: Mapping[str, Any]) -> int:
    check_params(params, ALLOWED_PARAMS)
    classifier = params.get("classifier", CLASSIFIERS[0])
    if classifier not in CLASSIFIERS:
        raise RecipeError(f"param 'classifier' must be one of {CLASSIFIERS}, got {classifier!r}")
    return int_param(params, "seed", 0)


def _load_split(seed: int) -> _Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=seed, stratify=y
    )
    return _Split(x_train, x_test, y_train, y_test)


def _train(split: _Split) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Scaling lets lbfgs converge well inside max_iter; the scaler becomes one ONNX node,
    # so callers keep feeding raw 0..16 pixels.
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return pipeline.fit(split.x_train, split.y_train)


def _convert(pipeline: Pipeline) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    model: onnx.ModelProto = convert_sklearn(
        pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        # zipmap off: a plain [batch, 10] tensor instead of a list of dicts per row.
        options={LogisticRegression: {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    _normalise_signature(model)
    return model


def _normalise_signature(model: onnx.ModelProto) -> None:
    """Pin output names and name the batch axis so the contract does not drift with skl2onnx."""
    import onnx

    for output, name in zip(model.graph.output, OUTPUT_NAMES, strict=True):
        if output.name != name:
            _rename_value(model.graph, output.name, name)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    # skl2onnx can list the default domain twice; some loaders reject duplicates.
    unique = {entry.domain: entry.version for entry in model.opset_import}
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in unique.items())
    onnx.checker.check_model(model, full_check=True)


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
    for output in graph.output:
        if output.name == old:
            output.name = new


def _parity(model: onnx.ModelProto, pipeline: Pipeline, x_test: np.ndarray) -> tuple[float, float]:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x_test.astype(np.float32)})
    agreement = float(np.mean(labels == pipeline.predict(x_test)))
    prob_diff = float(np.max(np.abs(probabilities - pipeline.predict_proba(x_test))))
    if agreement < MIN_AGREEMENT:
        raise RecipeError(f"ONNX labels agree with scikit-learn on only {agreement:.4%}")
    if prob_diff > MAX_PROBABILITY_DIFF:
        raise RecipeError(f"ONNX probabilities differ by {prob_diff:.2e} > {MAX_PROBABILITY_DIFF}")
    return agreement, prob_diff
