"""The Modal token from Secrets Manager (moto), as the CDK app leaves it and as the operator
fills it: the placeholder (an empty token_id) is refused with a reason, a real token is
read, a malformed one is refused; none is ever part of a reason."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from functions.runtime.environment import ExecutionEnvironment, Settings
from functions.runtime.gpu import GpuRefused
from stratoserve.local.aws import client, function_environment
from tests.conftest import DECLARATION_FILE

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration


def _environment(
    declaration: Declaration, aws_url: str, secret: str, monkeypatch: pytest.MonkeyPatch
) -> ExecutionEnvironment:
    for name, value in function_environment(aws_url).items():
        monkeypatch.setenv(name, value)
    arn = client("secretsmanager", aws_url).create_secret(Name=f"t/{secret}", SecretString=secret)
    settings = Settings(function="worker", modal_secret_arn=arn["ARN"])
    return ExecutionEnvironment(declaration, DECLARATION_FILE, "worker", settings=settings)


def test_the_placeholder_the_stack_creates_is_refused(
    declaration: Declaration, aws_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    placeholder = json.dumps({"token_id": "", "token_secret": "GeneratedByCloudFormation"})
    environment = _environment(declaration, aws_url, placeholder, monkeypatch)
    with pytest.raises(GpuRefused, match="holds no token yet") as refused:
        environment._modal_token()
    assert "GeneratedByCloudFormation" not in str(refused.value)


def test_the_operators_token_is_read(
    declaration: Declaration, aws_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = json.dumps({"token_id": "ak-123", "token_secret": "as-456"})
    environment = _environment(declaration, aws_url, token, monkeypatch)
    assert environment._modal_token() == ("ak-123", "as-456")


def test_a_malformed_secret_is_refused_without_its_value(
    declaration: Declaration, aws_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = _environment(declaration, aws_url, "as-not-json-secret", monkeypatch)
    with pytest.raises(GpuRefused, match="must be JSON") as refused:
        environment._modal_token()
    assert "as-not-json-secret" not in str(refused.value)
