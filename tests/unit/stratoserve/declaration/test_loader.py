"""The declaration loader: the shipped file loads, bad files get one line per problem."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from stratoserve.declaration import API_FUNCTION, DeclarationError, load_declaration
from tests.conftest import DECLARATION_FILE, ROOT
from tests.unit.stratoserve.declaration.minimal import MINIMAL

if TYPE_CHECKING:
    from pathlib import Path


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "stratoserve.toml"
    path.write_text(textwrap.dedent(text))
    return _problems_of(path)


def test_the_shipped_declaration_loads() -> None:
    declaration = load_declaration(DECLARATION_FILE)

    assert set(declaration.models) == {"digits", "embed"}
    assert declaration.api["v1"].models == {"digits": "1", "embed": "1"}
    assert declaration.api["v2"].models == {"digits": "1", "embed": "2"}
    assert declaration.function_for_model("embed") == "embed"
    assert declaration.successor_of("v1") == "v2"
    assert declaration.successor_of("v2") is None


def test_each_unclaimed_model_gets_its_own_function_and_api_always_exists(tmp_path: Path) -> None:
    path = tmp_path / "stratoserve.toml"
    path.write_text(MINIMAL)

    declaration = load_declaration(path)

    assert declaration.functions["digits"].models == ["digits"]
    assert declaration.functions[API_FUNCTION].models == []


def test_structural_problems_are_one_line_each_naming_the_key(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [project]
        nmae = "x"
        [runtime]
        graph_optimization = "max"
        intra_op_threads = 0
        [models.embed]
        task = "embedd"
        [models.embed.versions.one]
        artifact = "x"
        [api.version2]
        models = { embed = "1" }
        """,
    )

    assert problems == [
        "project.nmae: unknown key (did you mean name?)",
        "runtime.intra_op_threads: must be at least 1",
        "runtime.graph_optimization: must be disable, basic, extended or all",
        "models.embed.task: must be classify or embed",
        'models.embed.versions.one: model versions are whole numbers written as strings, like "1"',
        "api.version2: API versions are named v1, v2, ...",
    ]


def test_cross_references_are_checked_with_key_paths(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        MINIMAL
        + """
        [api.v2]
        models = { digits = "3", embed = "1" }
        deprecated = 2027-01-01
        sunset = 2026-01-01
        [functions.big]
        models = ["digits", "digit"]
        snapstart = true
        provisioned_concurrency = 2
        [functions.other]
        models = ["digits"]
        [routing.nope]
        inline_max_inputs = 3
        """,
    )

    assert problems == [
        "api.v2.models.digits: model digits has no version 3 (declared: 1)",
        "api.v2.models.embed: unknown model",
        "api.v2.sunset: must not be before deprecated (2027-01-01)",
        "functions.big.models: unknown model digit (did you mean digits?)",
        "functions.big: snapstart and provisioned_concurrency are mutually exclusive "
        "(AWS rejects both on one function); keep one",
        "functions.other.models: digits is already served by functions.big; "
        "a model has one function",
        "routing.nope: unknown model",
    ]


def test_missing_sections_and_bad_toml(tmp_path: Path) -> None:
    assert _problems(tmp_path, "[project]\nname = 'x'\n") == [
        "models: is required",
        "api: is required",
    ]
    (problem,) = _problems(tmp_path, "[models\n")
    assert problem.startswith("not valid TOML: ")
    with pytest.raises(DeclarationError, match="file not found"):
        load_declaration(tmp_path / "absent.toml")


def test_the_cli_prints_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace('task = "classify"', 'task = "regress"') + "[oops]\n")

    result = subprocess.run(
        [sys.executable, "-m", "stratoserve.cli", "models", "build", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {path}: models.digits.task: must be classify or embed",
        f"error: {path}: oops: unknown key",
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_importing_the_loader_stays_light() -> None:
    code = (
        "import sys, stratoserve.declaration;"
        "heavy = {'boto3', 'onnxruntime', 'fastapi', 'aws_cdk', 'numpy', 'torch'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )

    assert result.stdout.strip() == "[]"


def test_function_names_and_artifacts_cannot_collide(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [models.digits]
        task = "classify"
        [models.digits.versions.1]
        artifact = "shared.onnx"
        [models.digits.versions.2]
        artifact = "shared.onnx"
        [models.api]
        task = "classify"
        [models.api.versions.1]
        artifact = "api.onnx"
        [models.other]
        task = "classify"
        [models.other.versions.1]
        artifact = "other.onnx"
        [api.v1]
        models = { digits = "1" }
        [functions.digits]
        models = ["other"]
        """,
    )

    assert problems == [
        "models.digits: no function serves it and functions.digits serves other models; "
        "add digits to a function's models",
        "models.api: the name api is reserved for the api function",
        "models.digits.versions.2.artifact: shared.onnx is also "
        "models.digits.versions.1.artifact; give each its own",
    ]


def test_an_unreadable_declaration_is_one_line(tmp_path: Path) -> None:
    (problem,) = _problems_of(tmp_path)
    assert problem.startswith("cannot read it: ")

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[models]")
    with pytest.raises(DeclarationError, match="not valid TOML"):
        load_declaration(binary)


def _problems_of(path: Path) -> list[str]:
    with pytest.raises(DeclarationError) as caught:
        load_declaration(path)
    return caught.value.problems


def test_plans_are_checked_against_models_routes_and_quota_periods(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        MINIMAL
        + """
        [plans.free]
        rate = 5
        burst = 10
        quota = { limit = 100, period = "WEEK", offset = 7 }
        models = ["digit"]
        throttles = { "/v1/predict/digit" = { rate = 1, burst = 1 } }
        [plans.daily]
        rate = 1
        burst = 1
        quota = { limit = 100, period = "DAY", offset = 1 }
        """,
    )

    assert problems == [
        "plans.free.models: unknown model digit (did you mean digits?)",
        "plans.free.throttles: unknown route /v1/predict/digit (did you mean /v1/predict/digits?)",
        "plans.free.quota.offset: must be 0..6 for a WEEK period",
        "plans.daily.quota.offset: must be 0 for a DAY period",
    ]


def test_the_dev_key_gets_the_most_generous_plan() -> None:
    declaration = load_declaration(DECLARATION_FILE)

    assert declaration.most_generous_plan() == "pro"
    assert declaration.plans["free"].allows("digits")
    assert not declaration.plans["free"].allows("embed")
    assert declaration.plans["pro"].allows("embed")
