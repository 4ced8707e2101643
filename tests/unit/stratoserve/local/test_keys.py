"""Where the dev key comes from, and how the gateway's key store answers."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from stratoserve.local.keys import ApiKey, BadKeyError, key_id_for, resolve_dev_key

if TYPE_CHECKING:
    from pathlib import Path

GOOD = "a-dev-key-of-enough-length"


def test_explicit_key_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATOSERVE_DEV_API_KEY", "from-the-environment-xyz")

    assert resolve_dev_key(GOOD, tmp_path) == (GOOD, "--api-key")
    assert resolve_dev_key(None, tmp_path) == (
        "from-the-environment-xyz",
        "STRATOSERVE_DEV_API_KEY",
    )


def test_a_generated_key_is_kept_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRATOSERVE_DEV_API_KEY", raising=False)

    first, source = resolve_dev_key(None, tmp_path)
    again, again_source = resolve_dev_key(None, tmp_path)

    assert source == "generated"
    assert again == first
    assert again_source.endswith("dev-api-key")
    assert len(first) >= 20
    assert stat.S_IMODE((tmp_path / "dev-api-key").stat().st_mode) == 0o600


def test_a_short_key_is_refused_with_the_rule(tmp_path: Path) -> None:
    with pytest.raises(BadKeyError, match="at least 20"):
        resolve_dev_key("short", tmp_path)


def test_a_key_never_shows_its_value() -> None:
    key = ApiKey(key_id=key_id_for(GOOD), tenant="dev", value=GOOD)

    assert GOOD not in repr(key)
    assert key_id_for(GOOD) == key_id_for(GOOD) != key_id_for(GOOD + "x")
