"""Layer-size report: every layer's and every function's size, unzipped and zipped,
against Lambda's limits (250 MB unzipped for a zip function with its layers, 50 MB zipped
for one directly uploaded part, 10 GB for a container image). Writes
docs/bench/layers.json from `stratoserve layers build` (layers that are up to date are
not rebuilt: their figures are those of their last build).

    python bench/layer_sizes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_result
from layers.builder import build_layers
from layers.limits import DIRECT_UPLOAD_LIMIT, IMAGE_LIMIT, MIB, UNZIPPED_LIMIT
from stratoserve.declaration import default_path, load_declaration


def main() -> None:
    source = default_path().resolve()
    declaration = load_declaration(source)
    started = time.perf_counter()
    report = build_layers(declaration, source)
    seconds = round(time.perf_counter() - started, 1)
    zipped = {layer.zip: layer.zipped_bytes for layer in report.layers}
    ratios = []
    functions = []
    for function in report.functions:
        limit, limit_name = (
            (IMAGE_LIMIT, "10 GB (a container image)")
            if function.package == "image"
            else (UNZIPPED_LIMIT, "250 MB (Lambda's limit)")
        )
        layers_zipped = [zipped[layer] for layer in function.layer_zips]
        functions.append(
            {
                "name": function.name,
                "package": function.package,
                "layers": function.layers,
                "unzipped_bytes": function.unzipped_bytes,
                "zipped_bytes": report.code.zipped_bytes + sum(layers_zipped),
                "largest_part_zipped_bytes": max([report.code.zipped_bytes, *layers_zipped]),
                "limit_bytes": limit,
                "problems": function.problems,
            }
        )
        ratios.append(
            {
                "name": f"function {function.name} ({function.package}) unzipped, code + "
                f"layers ({', '.join(function.layers)})",
                "framework": f"{function.unzipped_bytes / MIB:.1f} MB",
                "baseline": limit_name,
                "ratio": function.unzipped_bytes / limit,
                "target": 1.0,
                "higher_is_better": False,
            }
        )
    largest = max(layer.zipped_bytes for layer in report.layers)
    ratios.append(
        {
            "name": "largest layer zipped (through S3 by CDK; 50 MB: a direct upload)",
            "framework": f"{largest / MIB:.1f} MB",
            "baseline": "50 MB (direct upload)",
            "ratio": largest / DIRECT_UPLOAD_LIMIT,
            "target": None,
            "higher_is_better": False,
        }
    )
    result = {
        "command": "python bench/layer_sizes.py (stratoserve layers build)",
        "machine": machine(),
        "build_seconds": seconds,
        "ratios": ratios,
        **report.to_json(),
        "function_sizes": functions,
    }
    path = write_result("layers", result)
    print(f"wrote {path}")
    for function in functions:
        print(
            f"{function['name']:8} {function['package']:5} "
            f"{function['unzipped_bytes'] / MIB:7.1f} MB unzipped, "
            f"{function['zipped_bytes'] / MIB:6.1f} MB zipped, limit "
            f"{function['limit_bytes'] / MIB:.0f} MB"
        )


if __name__ == "__main__":
    main()
