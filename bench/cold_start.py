"""Cold start: a fresh process that imports the Lambda handler module (init: imports,
declaration, model load) and answers its first event, against a fresh process that imports
onnxruntime + tokenizers, creates the same session and runs once. Both are timed from just
before the process is spawned to the moment the first answer exists, interleaved.

    python bench/cold_start.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BENCH_KEY_ID, ROOT, machine, median, tenant_registry, write_result

TARGET = 1.5

FRAMEWORK = """
import json, os, sys, time
started = time.perf_counter()
import functions.api.handler as module
imported = time.perf_counter()
event = json.loads(sys.argv[1])
class Context:
    function_name = "embed"; memory_limit_in_mb = 2048; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:embed"
answer = module.handler(event, Context())
done = time.perf_counter()
assert answer["statusCode"] == 200, answer
load_ms = sum(model.load_ms for model in module.environment.cache._models.values())
print(json.dumps({"answered_at": time.time(), "init_ms": (imported - started) * 1000,
                  "model_load_ms": load_ms, "first_event_ms": (done - imported) * 1000}))
"""

RAW = """
import json, sys, time
started = time.perf_counter()
import numpy as np, onnxruntime
from tokenizers import Tokenizer
imported = time.perf_counter()
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
options.enable_cpu_mem_arena = False
options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
session = onnxruntime.InferenceSession(sys.argv[1], sess_options=options,
                                       providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(sys.argv[2])
tokenizer.enable_truncation(max_length=256)
loaded = time.perf_counter()
encoding = tokenizer.encode_batch([sys.argv[3]])[0]
vector = session.run(None, {"input_ids": np.array([encoding.ids], dtype=np.int64),
                            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64)})
done = time.perf_counter()
print(json.dumps({"answered_at": time.time(), "import_ms": (imported - started) * 1000,
                  "model_load_ms": (loaded - imported) * 1000,
                  "first_event_ms": (done - loaded) * 1000}))
"""

SENTENCE = "A man is eating a piece of bread."


def _one_version_declaration(directory: Path) -> Path:
    """The shipped declaration with v1 dropped, so the embed function preloads exactly the
    one model (v2, int8) the baseline loads: like for like."""
    kept, dropping = [], False
    for line in (ROOT / "stratoserve.toml").read_text().splitlines(keepends=True):
        if line.startswith("["):
            dropping = line.strip() == "[api.v1]"
        # Plan throttles on v1 routes would name a route that no longer exists.
        if not dropping and "/v1/" not in line:
            kept.append(line)
    path = directory / "stratoserve.toml"
    path.write_text("".join(kept))
    return path


def _event() -> str:
    event = json.loads((ROOT / "tests/events/apigw-rest-proxy.json").read_text())
    event.update(
        path="/v2/predict/embed",
        resource="/v2/predict/embed",
        body=json.dumps({"inputs": [SENTENCE]}),
        isBase64Encoded=False,
    )
    event["requestContext"]["identity"]["apiKeyId"] = BENCH_KEY_ID
    return json.dumps(event)


def _spawn(arguments: list[str], env: dict[str, str]) -> dict[str, Any]:
    spawned = time.time()
    output = subprocess.run(
        [sys.executable, "-c", *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    figures["total_ms"] = (figures.pop("answered_at") - spawned) * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()

    began = time.perf_counter()
    from stratoserve.declaration import function_environment as variables
    from stratoserve.declaration import load_declaration, models_dir

    declaration = load_declaration(ROOT / "stratoserve.toml")
    root = models_dir(declaration, ROOT / "stratoserve.toml")
    version = declaration.models["embed"].versions["2"]
    base_env = {**os.environ, variables.MODELS_DIR: str(root), variables.FUNCTION: "embed"}
    # Deployed code ships compiled (layers/ compiles for the target Python); let the first
    # spawn write bytecode so no measured run pays for compiling.
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)
    event = _event()
    with tempfile.TemporaryDirectory() as directory, tenant_registry() as registry:
        # The first keyed event looks its tenant up, as a deployed function's does.
        base_env.update(registry)
        one_version = _one_version_declaration(Path(directory))
        variants = {
            "framework": ([FRAMEWORK, event], {**base_env, variables.CONFIG: str(one_version)}),
            "framework_as_declared": (
                [FRAMEWORK, event],
                {**base_env, variables.CONFIG: str(ROOT / "stratoserve.toml")},
            ),
            "raw": (
                [RAW, str(root / version.artifact), str(root / str(version.tokenizer)), SENTENCE],
                base_env,
            ),
        }
        for args, env in variants.values():  # compile bytecode, fill the page cache
            _spawn(args, env)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for round_ in range(arguments.rounds):
            names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in names:
                runs[name].append(_spawn(*variants[name]))

    def med(name: str, field: str) -> float:
        return median([run[field] for run in runs[name]])

    framework, raw = med("framework", "total_ms"), med("raw", "total_ms")
    declared = med("framework_as_declared", "total_ms")
    result = {
        "command": "python bench/cold_start.py",
        "machine": machine(),
        "setup": {
            "model": "embed v2 (MiniLM-L6 int8)",
            "rounds": arguments.rounds,
            "order": "the three variants in turn, reversed every other round",
            "wall_s": round(time.perf_counter() - began, 1),
        },
        "medians_ms": {name: {field: med(name, field) for field in runs[name][0]} for name in runs},
        "runs": runs,
        "ratios": [
            {
                "name": "cold start to first answer (one model)",
                "framework": f"{framework:.0f} ms (handler module init + first event)",
                "baseline": f"{raw:.0f} ms (onnxruntime + tokenizers, one run)",
                "ratio": framework / raw,
                "target": TARGET,
            }
        ],
        "as_declared": {
            "note": "the shipped embed function preloads v1 (fp32) and v2 (int8)",
            "total_ms": declared,
            "ratio_to_raw": declared / raw,
        },
    }
    path = write_result("cold_start", result)
    print(f"framework {framework:.0f} ms, raw {raw:.0f} ms, ratio {framework / raw:.2f}x")
    print(f"as declared (v1 + v2 preloaded): {declared:.0f} ms ({declared / raw:.2f}x)")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
