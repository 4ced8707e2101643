"""The runtime's settings and the functions' environment contract
(stratoserve.declaration.function_environment) name the same variables: a renamed settings
field, or a renamed constant, fails here instead of leaving a variable the CDK app and the
local stack set but no function reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.runtime.environment import Settings
from stratoserve.declaration import function_environment as variables

if TYPE_CHECKING:
    import pytest


def _prefixed_fields() -> dict[str, str]:
    """Each settings field read under the prefix (not through an alias of its own, as
    memory_mb is through AWS's AWS_LAMBDA_FUNCTION_MEMORY_SIZE), by its variable."""
    return {
        variables.PREFIX + name.upper(): name
        for name, field in Settings.model_fields.items()
        if field.alias is None and field.validation_alias is None
    }


def test_the_settings_read_under_the_contracts_prefix() -> None:
    assert Settings.model_config.get("env_prefix") == variables.PREFIX


def test_every_contract_setting_is_the_prefix_and_a_settings_field() -> None:
    fields = _prefixed_fields()

    assert len(set(variables.SETTINGS)) == len(variables.SETTINGS)
    for name in variables.SETTINGS:
        assert name.startswith(variables.PREFIX), name
        assert name in fields, f"{name}: no Settings field reads it"


def test_every_settings_field_from_the_environment_has_its_constant() -> None:
    assert set(_prefixed_fields()) == set(variables.SETTINGS)


def test_each_contract_variable_reaches_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    # "1" parses as every field's type (a string, a path, a secret, true).
    for name in variables.SETTINGS:
        monkeypatch.setenv(name, "1")

    settings = Settings()

    fields = _prefixed_fields()
    for name in variables.SETTINGS:
        field = fields[name]
        assert getattr(settings, field) != Settings.model_fields[field].default, name
