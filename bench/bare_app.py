"""The "just wrap it in a web app" baseline for bench/gateway_throughput.py: a plain FastAPI
app with one endpoint that tokenizes and runs embed v2 (MiniLM int8) with ONNX Runtime,
the way a developer writes it in an afternoon. No API keys, no usage plans, no proxy
events, no separate execution environments: one process.

The session options are the ones the stack's functions use (stratoserve.toml [runtime],
see functions/runtime/models.py `session_options`), so both sides run the same model the
same way.

    cd bench && uvicorn bare_app:app        # then POST /embed {"inputs": ["some text"]}

$BARE_APP_MODEL_DIR points at another directory holding model.onnx + tokenizer.json
(default: build/models/embed/2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer

MODEL_DIR = Path(
    os.environ.get(
        "BARE_APP_MODEL_DIR",
        Path(__file__).resolve().parents[1] / "build" / "models" / "embed" / "2",
    )
)

options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.enable_cpu_mem_arena = False
options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
options.log_severity_level = 3
session = onnxruntime.InferenceSession(
    str(MODEL_DIR / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
)
tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
tokenizer.enable_truncation(max_length=256)
tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

app = FastAPI()


class EmbedRequest(BaseModel):
    inputs: list[str]


# A plain `def` endpoint, as a typical user writes it: FastAPI runs it in its threadpool
# (anyio, 40 threads by default), so several requests tokenize and run the session at once;
# ONNX Runtime releases the GIL inside session.run, tokenizers inside encode_batch.
@app.post("/embed")
def embed(request: EmbedRequest) -> dict[str, Any]:
    encodings = tokenizer.encode_batch(request.inputs)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    (embeddings,) = session.run(None, feeds)
    return {"outputs": embeddings.tolist()}
