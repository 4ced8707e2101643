"""Pinning a layer's closure to installed versions, for the target's markers."""

from __future__ import annotations

import pytest

from layers.pins import PinError, pin, target_environment

INSTALLED = {
    "app": ("1.0", ["lib>=2", "boto3>=1.30", "legacy; python_version < '3.12'", "hub"]),
    "lib": ("2.5", ["arm-only; platform_machine == 'aarch64'", "extra-dep; extra == 'fast'"]),
    "arm-only": ("0.1", []),
    "extra-dep": ("3.0", []),
    "boto3": ("1.40", ["botocore"]),
    "hub": ("0.9", ["requests"]),
    "legacy": ("1.0", []),
}


def _installed(name: str) -> tuple[str, list[str]] | None:
    return INSTALLED.get(name)


def test_closure_follows_markers_and_leaves_out_what_lambda_ships() -> None:
    pins = pin(
        ["app>=1"],
        target_environment("aarch64"),
        leave_out={"boto3": "Lambda ships it", "hub": "not needed"},
        installed=_installed,
    )
    assert pins.versions == {"app": "1.0", "lib": "2.5", "arm-only": "0.1"}
    assert pins.excluded == {"boto3": "Lambda ships it", "hub": "not needed"}
    assert pins.specifiers() == ["app==1.0", "arm-only==0.1", "lib==2.5"]


def test_x86_and_extras() -> None:
    pins = pin(["lib[fast]"], target_environment("x86_64"), leave_out={}, installed=_installed)
    assert pins.versions == {"lib": "2.5", "extra-dep": "3.0"}


def test_missing_or_mismatched_versions_are_refused() -> None:
    with pytest.raises(PinError, match="nothere is not installed"):
        pin(["nothere"], target_environment("x86_64"), leave_out={}, installed=_installed)
    with pytest.raises(PinError, match=r"lib 2.5 is installed, but lib>=3 is required"):
        pin(["lib>=3"], target_environment("x86_64"), leave_out={}, installed=_installed)


def test_the_real_runtime_layer_has_no_boto3() -> None:
    """Powertools names boto3 only under extras; the pins of this environment agree."""
    from layers.recipes import NOT_SHIPPED

    pins = pin(
        ["aws-lambda-powertools", "pydantic-settings", "fastapi", "mangum", "orjson"],
        target_environment("aarch64"),
        leave_out=NOT_SHIPPED,
    )
    assert "aws-lambda-powertools" in pins.versions
    assert not {"boto3", "botocore", "s3transfer"} & set(pins.versions)
