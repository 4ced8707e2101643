"""Lambda SnapStart's runtime hooks. With SnapStart, init runs once per published version
and every environment is restored from its snapshot: what must differ per environment (an
id) or be counted per environment (a cold start) is done after each restore, through the
`snapshot_restore_py` module that Lambda's Python runtime provides. Elsewhere (no
SnapStart, the local stack) registering is a no-op."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

SNAP_START = "snap-start"
"""AWS_LAMBDA_INITIALIZATION_TYPE of an init that becomes a snapshot."""


def from_snapshot() -> bool:
    """Whether this init is a SnapStart snapshot's (its environments are restored copies)."""
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == SNAP_START


def after_restore(callback: Callable[[], None]) -> bool:
    """Run `callback` after each restore from the snapshot; False where there is none."""
    if not from_snapshot():
        return False
    try:
        from snapshot_restore_py import register_after_restore
    except ImportError:
        return False
    register_after_restore(callback)
    return True
