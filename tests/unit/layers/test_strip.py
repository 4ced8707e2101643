"""Trimming rules on a fake installed tree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layers.recipes import ONNXRUNTIME_UNUSED
from layers.strip import strip_tree

if TYPE_CHECKING:
    from pathlib import Path

TREE = [
    "pkg/__init__.py",
    "pkg/core.py",
    "pkg/core.pyi",
    "pkg/py.typed",
    "pkg/__pycache__/core.cpython-311.pyc",
    "pkg/tests/test_core.py",
    "pkg/sub/test/data.txt",
    "pkg/testing/helpers.py",
    "pkg-1.0.dist-info/METADATA",
    "pkg-1.0.dist-info/RECORD",
    "pkg-1.0.dist-info/top_level.txt",
    "pkg-1.0.dist-info/WHEEL",
    "pkg-1.0.dist-info/INSTALLER",
    "pkg-1.0.dist-info/entry_points.txt",
    "pkg-1.0.dist-info/licenses/LICENSE",
    "onnxruntime/__init__.py",
    "onnxruntime/capi/_pybind_state.py",
    "onnxruntime/transformers/big.py",
    "onnxruntime/quantization/q.py",
    "onnxruntime/tools/t.py",
    "onnxruntime/datasets/d.py",
    "onnxruntime/backend/b.py",
    "huggingface_hub/__init__.py",
    "botocore/__init__.py",
    "botocore-1.0.dist-info/METADATA",
    "bin/fastapi",
]


def _tree(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def test_strip_rules(tmp_path: Path) -> None:
    for name in TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x" * 10)
    summary = strip_tree(tmp_path, ONNXRUNTIME_UNUSED)
    assert _tree(tmp_path) == {
        "pkg/__init__.py",
        "pkg/core.py",
        "pkg/py.typed",
        "pkg/testing/helpers.py",  # a module named testing is code, not tests
        "pkg-1.0.dist-info/METADATA",
        "pkg-1.0.dist-info/RECORD",
        "pkg-1.0.dist-info/top_level.txt",
        "pkg-1.0.dist-info/licenses/LICENSE",
        "onnxruntime/__init__.py",
        "onnxruntime/capi/_pybind_state.py",
    }
    assert summary.removed_bytes == {
        "dropped": 10 * 9,
        "dist-info": 40,  # three files, and the fake RECORD's line for no file
        "__pycache__": 10,
        "tests": 20,
        "stubs": 10,
    }
    assert set(summary.dropped) == {"bin", "huggingface_hub", "botocore", *ONNXRUNTIME_UNUSED}


def test_importlib_metadata_still_reads_a_trimmed_tree(tmp_path: Path) -> None:
    import importlib.metadata

    info = tmp_path / "pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (info / "RECORD").write_text(
        "pkg/__init__.py,,\n../../bin/pkg,sha256=abc,12\npkg/gone.pyi,,\npkg-1.0.dist-info/RECORD,,\n"
    )
    strip_tree(tmp_path)
    (found,) = importlib.metadata.distributions(path=[str(tmp_path)])
    assert (found.metadata["Name"], found.version) == ("pkg", "1.0")
    # the console script outside the tree and the removed stub are no longer listed
    assert [str(file) for file in found.files or []] == [
        "pkg/__init__.py",
        "pkg-1.0.dist-info/RECORD",
    ]
