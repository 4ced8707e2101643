"""SnapStart: each restored environment gets its own id and counts as a cold start; without
a snapshot (an on-demand init, the local stack) nothing is registered."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import TYPE_CHECKING

from functions.runtime import snapstart
from tests.conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest


def _runtime_hooks(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], None]]:
    """Lambda's snapshot_restore_py, as the Python runtime provides it under SnapStart."""
    hooks: list[Callable[[], None]] = []
    module = types.ModuleType("snapshot_restore_py")
    module.register_after_restore = hooks.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", module)
    return hooks


def test_without_a_snapshot_nothing_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = _runtime_hooks(monkeypatch)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    assert snapstart.after_restore(lambda: None) is False
    assert hooks == []


RESTORE_TWICE = """
import snapshot_restore_py
from functions.runtime import warmup
ids = [warmup.ENVIRONMENT_ID]
for hook in snapshot_restore_py.hooks * 2:  # Lambda restores two environments
    hook()
    ids.append(warmup.ENVIRONMENT_ID)
print(len(set(ids)))
"""


def test_a_restored_environment_gets_its_own_id(tmp_path: Path) -> None:
    """In a process of its own, as Lambda's runtime imports the handler: warm-up's id is
    made again after each restore."""
    (tmp_path / "snapshot_restore_py.py").write_text(
        "hooks = []\ndef register_after_restore(hook):\n    hooks.append(hook)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", RESTORE_TWICE],
        env={
            **os.environ,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


def test_a_restore_is_the_cold_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.runtime.observability import record_cold_start

    hooks = _runtime_hooks(monkeypatch)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    record_cold_start("digits")
    assert "ColdStart" not in capsys.readouterr().out  # the snapshot's init is not one
    (restored,) = hooks
    restored()
    assert '"ColdStart"' in capsys.readouterr().out
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "provisioned-concurrency")
    record_cold_start("embed")
    assert "ColdStart" not in capsys.readouterr().out
