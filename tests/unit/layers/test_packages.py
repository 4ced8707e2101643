"""What a function deploys besides its layers: the code zip (compiled for Lambda's paths,
the same bytes for the same tree) and an image's build context (the Dockerfile, the code
and the layers in attachment order)."""

from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING

import pytest

from layers.builder import compile_for_lambda, function_code_files, target_python
from layers.packages import DOCKERFILE, build_code, stage_image
from tests.conftest import DECLARATION_FILE

if TYPE_CHECKING:
    from pathlib import Path


def test_the_code_zip_holds_the_functions_the_loader_and_the_declaration(
    tmp_path: Path,
) -> None:
    files = function_code_files(DECLARATION_FILE)
    first = build_code(files, tmp_path / "a", None, compile_for_lambda)
    again = build_code(files, tmp_path / "b", None, compile_for_lambda)
    assert first.sha256 == again.sha256  # deterministic: an unchanged tree keeps its asset
    with zipfile.ZipFile(first.zip) as archive:
        names = set(archive.namelist())
    assert {
        "stratoserve.toml",
        "functions/api/handler.py",
        "functions/worker/handler.py",
        "stratoserve/declaration/loader.py",
    } <= names
    assert not any(
        name.startswith(("tests/", "infra_cdk/", "stratoserve/local/")) for name in names
    )
    assert first.compiled_with is None


def test_compiled_for_lambdas_python_and_paths(tmp_path: Path) -> None:
    python = target_python()
    if python is None:
        pytest.skip("no Python 3.12 here to compile with (`layers build` notes it, too)")
    files = [
        (name, path)
        for name, path in function_code_files(DECLARATION_FILE)
        if name.endswith("warmup.py")
    ]
    code = build_code(files, tmp_path, python, compile_for_lambda)
    assert code.compiled_with == python[1]
    with zipfile.ZipFile(code.zip) as archive:
        compiled = [name for name in archive.namelist() if name.endswith(".pyc")]
        assert compiled == ["functions/runtime/__pycache__/warmup.cpython-312.pyc"]
        # The source path recorded is where Lambda has it.
        assert b"/var/task/functions/runtime/warmup.py" in archive.read(compiled[0])


def test_an_image_context_keeps_the_attachment_order(tmp_path: Path) -> None:
    layers = []
    for name in ("runtime", "onnx", "models-worker"):
        layer = tmp_path / f"{name}.zip"
        layer.write_bytes(name.encode())
        layers.append(layer)
    code = tmp_path / "code.zip"
    code.write_bytes(b"code")
    context = stage_image("worker", layers, code, tmp_path / "out")
    assert context == tmp_path / "out" / "images" / "worker"
    assert (context / "Dockerfile").read_text() == DOCKERFILE.read_text()
    assert sorted(path.name for path in (context / "layers").iterdir()) == [
        "01-runtime.zip",
        "02-onnx.zip",
        "03-models-worker.zip",
    ]
    assert (context / "layers" / "02-onnx.zip").read_bytes() == b"onnx"
    assert (context / "code.zip").read_bytes() == b"code"
    # Staged again from scratch: nothing stale stays behind.
    stage_image("worker", layers[:1], code, tmp_path / "out")
    assert [path.name for path in (context / "layers").iterdir()] == ["01-runtime.zip"]
