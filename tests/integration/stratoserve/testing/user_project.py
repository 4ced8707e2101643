"""A user's project folder and its own pytest session, run in a subprocess (what pytester's
`runpytest_subprocess` does)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

RUN_TIMEOUT_S = 420


@dataclass(frozen=True)
class UserProject:
    root: Path

    def write_test(self, name: str, source: str) -> None:
        (self.root / name).write_text(source)

    def pytest(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """pytest in the project's folder; its output captured."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PYTEST_", "STRATOSERVE_"))
        }
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *arguments],
            cwd=self.root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
