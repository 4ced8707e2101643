"""A user's project that enables `stratoserve.testing`, run as its own pytest session.

pytest only honours `pytest_plugins` in the rootdir's conftest.py, so the plugin is tried
the way a user meets it: a project folder with its own pytest.ini and conftest.py, and
pytest run there in a subprocess (what pytester's `runpytest_subprocess` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import DECLARATION_FILE
from tests.integration.stratoserve.testing.user_project import UserProject

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def user_project(tmp_path: Path, built_models: Path) -> UserProject:
    """A project folder whose tests use this repository's declaration (built models) through
    the plugin: `stratoserve_config` in its pytest.ini, the plugin in its conftest.py."""
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nstratoserve_config = {DECLARATION_FILE}\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["stratoserve.testing"]\n')
    return UserProject(tmp_path)
