"""Warm latency: the Lambda handler (Mangum + FastAPI + model cache + logging) answering a
REST proxy event for one sentence with embed v2, against raw tokenize + session.run of the
same model with the same session options. Both run in this process, interleaved, so
machine noise hits both alike.

A third series runs the same handler with the model's answer precomputed: the framework's
own CPU time. What the ratio holds beyond model + framework is the two slowing each other
down (caches and branch predictors refilled between Python and the ONNX kernels).

Every call is timed; the result keeps each series' distribution over all its calls
(percentiles 1 to 99, min, max), the per-round medians, and the ratio of the medians of
the rounds.

    python bench/warm_latency.py [--rounds 9] [--calls 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BENCH_KEY_ID,
    ROOT,
    machine,
    median,
    percentile,
    tenant_registry,
    write_result,
)

SENTENCE = "A man is eating a piece of bread."
TARGET = 1.15


def _event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((ROOT / "tests/events/apigw-rest-proxy.json").read_text())
    event.update(
        path="/v2/predict/embed",
        resource="/v2/predict/embed",
        pathParameters=None,
        body=json.dumps({"inputs": [SENTENCE]}),
        isBase64Encoded=False,
    )
    event["requestContext"]["identity"]["apiKeyId"] = BENCH_KEY_ID
    return event


class Precomputed:
    """Stands in for the model: returns the real answer without computing it."""

    def __init__(self, outputs: Any) -> None:
        self.outputs = outputs

    def check(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def run(self, checked: Any) -> Any:
        return self.outputs


class Context:
    function_name = "embed"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:embed"
    aws_request_id = "bench"


def _raw_runner() -> Any:
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    from functions.runtime.models import session_options
    from stratoserve.declaration import load_declaration, models_dir

    declaration = load_declaration(ROOT / "stratoserve.toml")
    root = models_dir(declaration, ROOT / "stratoserve.toml")
    version = declaration.models["embed"].versions["2"]
    session = onnxruntime.InferenceSession(
        str(root / version.artifact),
        sess_options=session_options(declaration.runtime),
        providers=["CPUExecutionProvider"],
    )
    tokenizer = Tokenizer.from_file(str(root / str(version.tokenizer)))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def run() -> Any:
        (encoding,) = tokenizer.encode_batch([SENTENCE])
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0].tolist()

    return run


def _calls_ms(call: Any, calls: int) -> list[float]:
    """Milliseconds of each of `calls` calls in a row."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def distribution(samples: list[float]) -> dict[str, Any]:
    """Enough to draw the distribution: nearest-rank percentiles 1 to 99, min and max."""
    ordered = sorted(samples)
    return {
        "calls": len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "percentiles_1_to_99": [percentile(ordered, rank) for rank in range(1, 100)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=300)
    arguments = parser.parse_args()

    began = time.perf_counter()
    from stratoserve.declaration import function_environment as variables

    os.environ[variables.FUNCTION] = "embed"
    os.environ[variables.CONFIG] = str(ROOT / "stratoserve.toml")
    # The handler logs one JSON line per request, as on Lambda; its formatting cost is
    # measured, only the sink is /dev/null instead of CloudWatch.
    with (
        Path(os.devnull).open("w") as sink,
        contextlib.redirect_stdout(sink),
        tenant_registry() as registry,
    ):
        os.environ.update(registry)  # the handler's tenant lookups find the registry
        from functions.api.handler import environment, handler
        from functions.runtime.models import ModelKey

        event, context = _event(), Context()
        raw = _raw_runner()
        answer = handler(event, context)
        assert answer["statusCode"] == 200, answer
        with environment.cache.use(ModelKey("embed", "2")) as loaded:
            model = loaded.runner
            stub = Precomputed(model.run(model.check([SENTENCE])))

        def framework_only() -> Any:
            loaded.runner = stub
            try:
                return handler(event, context)
            finally:
                loaded.runner = model

        series: dict[str, Any] = {
            "framework": lambda: handler(event, context),
            "raw": raw,
            "framework_only": framework_only,
        }
        for _ in range(50):  # warm every path: allocator, caches, branch predictors
            for call in series.values():
                call()
        timings: dict[str, list[float]] = {name: [] for name in series}
        samples: dict[str, list[float]] = {name: [] for name in series}
        for round_ in range(arguments.rounds):
            # Rotate the order so no series always runs right after the same other.
            names = list(series)[round_ % 3 :] + list(series)[: round_ % 3]
            for name in names:
                calls = _calls_ms(series[name], arguments.calls)
                timings[name].append(median(calls))
                samples[name].extend(calls)

    framework_ms, raw_ms = timings["framework"], timings["raw"]
    framework, baseline = median(framework_ms), median(raw_ms)
    framework_only_ms = median(timings["framework_only"])
    result = {
        "command": "python bench/warm_latency.py",
        "machine": machine(),
        "setup": {
            "model": "embed v2 (MiniLM-L6 int8, per-channel)",
            "input": SENTENCE,
            "rounds": arguments.rounds,
            "calls_per_round": arguments.calls,
            "order": "the three series rotated each round",
            "wall_s": round(time.perf_counter() - began, 1),
        },
        "framework_ms_per_round": framework_ms,
        "raw_ms_per_round": raw_ms,
        "framework_only_ms_per_round": timings["framework_only"],
        # Every call of every round: the distribution, not just its medians.
        "distribution_ms": {name: distribution(values) for name, values in samples.items()},
        "breakdown_ms": {
            "model (raw)": baseline,
            "framework alone (model answer precomputed)": framework_only_ms,
            "interference (framework - raw - framework alone)": framework
            - baseline
            - framework_only_ms,
        },
        "ratios": [
            {
                "name": "warm latency, one sentence (embed v2)",
                "framework": f"{framework:.3f} ms (Mangum handler, REST proxy event)",
                "baseline": f"{baseline:.3f} ms (tokenize + session.run)",
                "ratio": framework / baseline,
                "target": TARGET,
            }
        ],
    }
    path = write_result("warm_latency", result)
    print(f"framework {framework:.3f} ms, raw {baseline:.3f} ms, ratio {framework / baseline:.2f}x")
    print(f"framework alone (model precomputed): {framework_only_ms:.3f} ms")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
