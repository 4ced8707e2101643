"""Model quality: what `stratoserve models build` measured on each built version, against
the gate its recipe enforces (digits: held-out accuracy and ONNX/scikit-learn agreement;
MiniLM: cosine to the torch model). Builds what is missing (the builder skips what is up
to date) and writes docs/bench/model_quality.json from build/models/manifest.json.

    python bench/model_quality.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_result
from models.builder import build_models
from models.recipes.digits import MIN_ACCURACY
from models.recipes.minilm_parity import MIN_COSINE
from stratoserve.declaration import default_path, load_declaration, models_dir


def main() -> None:
    source = default_path().resolve()
    declaration = load_declaration(source)
    started = time.perf_counter()
    build_models(declaration, source)
    seconds = round(time.perf_counter() - started, 1)
    manifest = json.loads((models_dir(declaration, source) / "manifest.json").read_text())
    versions = []
    ratios = []
    for name, built in sorted(manifest["models"].items()):
        for version, entry in sorted(built.items()):
            metrics = entry["metrics"]
            size = sum(file["size_bytes"] for file in entry["files"].values())
            if entry["recipe"] == "digits":
                measure, value, gate = "held-out accuracy", metrics["accuracy"], MIN_ACCURACY
                detail = f"ONNX agrees with scikit-learn on {metrics['onnx_agreement']:.0%}"
            else:
                precision = metrics["precision"]
                measure, value = f"least cosine to torch ({precision})", metrics["cosine_min"]
                gate = MIN_COSINE[precision]
                mean, sentences = metrics["cosine_mean"], metrics["sentences"]
                detail = f"mean cosine {mean:.4f} over {sentences} sentences"
            versions.append(
                {
                    "model": name,
                    "version": version,
                    "recipe": entry["recipe"],
                    "measure": measure,
                    "value": value,
                    "gate": gate,
                    "detail": detail,
                    "size_bytes": size,
                    "built_at": entry["built_at"],
                }
            )
            ratios.append(
                {
                    "name": f"{name} v{version} {measure}, against its build gate",
                    "framework": f"{value:.4f}",
                    "baseline": f"{gate} (the build fails below)",
                    "ratio": value / gate,
                    "target": 1.0,
                    "higher_is_better": True,
                }
            )
    result = {
        "benchmark": "model_quality",
        "command": "python bench/model_quality.py (stratoserve models build)",
        "machine": machine(),
        "build_seconds": seconds,
        "versions": versions,
        "ratios": ratios,
    }
    print(f"written to {write_result('model_quality', result)}")


if __name__ == "__main__":
    main()
