"""The layering written down in pyproject.toml ([tool.importlinter]) holds, and no module
imports another module's private name (a shared helper is public, in a module of its own
such as `_common.py`)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stratoserve", "functions", "models", "layers", "gpu_jobs", "infra_cdk")


def test_the_import_contracts_hold() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert set(declared["root_packages"]) == set(PACKAGES)
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    contracts = len(declared["contracts"])
    assert f"Contracts: {contracts} kept, 0 broken." in done.stdout


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
            continue
        if node.module.split(".")[0] not in PACKAGES:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    return found


def test_no_module_imports_another_module_s_private_name() -> None:
    sources = [
        path
        for folder in (*PACKAGES, "bench", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(sources) > 100, "the scan found the sources"
    found = [line for path in sources for line in _private_imports(path)]
    assert found == []
