"""`stratoserve.testing`: a pytest plugin for a stratoserve project's own tests.

Enable it in the project's top-level conftest.py (it is opt-in: no entry point loads it):

    pytest_plugins = ["stratoserve.testing"]

It reads the project's declaration: `--stratoserve-config FILE` on the command line, else
`stratoserve_config = FILE` in the pytest ini file (relative to that file), else
$STRATOSERVE_CONFIG, else stratoserve.toml in pytest's rootdir. The models must be built
(`stratoserve models build`).

Fixtures:

- `stratoserve_stack` (session): `stratoserve dev` started once per session on a free port,
  with a temporary state folder, stopped at the end. `.url`, `.state`, `.dev_key`,
  `.key(plan)` (a key per declared plan, tenant `test-<plan>`), `.client(plan, ...)`,
  `.cli(...)` (the `stratoserve` command against it), `.log`.
- `stratoserve_client`: a `stratoserve.client.Client` on the stack with the most generous
  plan's key, closed after the test.
- `stratoserve_client_for`: `stratoserve_client_for(plan, **client_options)` makes more.
- `stratoserve_aws`: the AWS side on moto in the test's process (`MotoAws`): the job
  queue, table, bucket and tenant registry; `.client("sqs")`, `.environment()`; emptied
  after each test.
- `stratoserve_events`: SAM-shaped sample events (`SampleEvents`): `.predict(...)`,
  `.api(...)`, `.job_message(...)`, `.sqs(...)`, `.scheduled()`, `.warmup(function)`,
  `.sweep()`, `.context()`.

A prediction, a job and a throttled plan, against the real local stack:

    import pytest
    from stratoserve.client import ThrottledError

    def test_predicts_a_digit(stratoserve_client):
        assert stratoserve_client.predict("digits", [[0.0] * 64]).outputs

    def test_a_job_finishes(stratoserve_client):
        job = stratoserve_client.submit("digits", [[0.0] * 64] * 3)
        assert len(job.wait(timeout_s=60).outputs) == 3

    def test_the_free_plan_is_throttled(stratoserve_client_for):
        free = stratoserve_client_for("free", max_retries=0)  # the client retries 429s
        with pytest.raises(ThrottledError):
            for _ in range(100):
                free.predict("digits", [[0.0] * 64])

Events for a handler called as Lambda calls it (`handler(event, context)`), in a test
that has set the function's environment up (e.g. with `stratoserve_aws.environment()`):

    def test_the_events_match_the_declaration(stratoserve_events):
        event = stratoserve_events.predict("digits", [[0.0] * 64])
        assert event["resource"] == "/v2/predict/digits"
        jobs = stratoserve_events.sqs(stratoserve_events.job_message("digits", [[0.0] * 64]))
        assert jobs["Records"][0]["eventSource"] == "aws:sqs"
        context = stratoserve_events.context()  # Lambda's context object, as locally
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stratoserve.declaration import function_environment as variables

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stratoserve.client import Client
    from stratoserve.declaration import Declaration
    from stratoserve.keys import IssuedKey
    from stratoserve.testing.aws import MotoAws
    from stratoserve.testing.events import SampleEvents
    from stratoserve.testing.stack import DevStack, StackStartError

__all__ = [
    "DevStack",
    "IssuedKey",
    "MotoAws",
    "SampleEvents",
    "StackStartError",
    "pytest_addoption",
    "stratoserve_aws",
    "stratoserve_client",
    "stratoserve_client_for",
    "stratoserve_config",
    "stratoserve_declaration",
    "stratoserve_events",
    "stratoserve_moto",
    "stratoserve_stack",
]

CONFIG_OPTION = "stratoserve_config"

# The fixtures' classes, imported when first asked for: a session that enables the plugin
# but uses none of them does not pay for the local stack's, moto's and the runtime's imports.
_EXPORTS = {
    "DevStack": "stratoserve.testing.stack",
    "IssuedKey": "stratoserve.keys",
    "StackStartError": "stratoserve.testing.stack",
    "MotoAws": "stratoserve.testing.aws",
    "SampleEvents": "stratoserve.testing.events",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("stratoserve").addoption(
        "--stratoserve-config",
        dest=CONFIG_OPTION,
        metavar="FILE",
        help="the project's declaration for the stratoserve fixtures (default: the ini's "
        "stratoserve_config, $STRATOSERVE_CONFIG, or stratoserve.toml in the rootdir)",
    )
    parser.addini(
        CONFIG_OPTION,
        "the project's declaration for the stratoserve fixtures, relative to the ini file",
    )


@pytest.fixture(scope="session")
def stratoserve_config(pytestconfig: pytest.Config) -> Path:
    """The declaration file the fixtures use, absolute."""
    given = pytestconfig.getoption(CONFIG_OPTION)
    if given:
        return Path(given).resolve()
    from_ini = pytestconfig.getini(CONFIG_OPTION)
    if from_ini:
        base = pytestconfig.inipath.parent if pytestconfig.inipath else pytestconfig.rootpath
        return (base / str(from_ini)).resolve()
    from_environment = os.environ.get(variables.CONFIG)
    if from_environment:
        return Path(from_environment).resolve()
    return (pytestconfig.rootpath / "stratoserve.toml").resolve()


@pytest.fixture(scope="session")
def stratoserve_declaration(stratoserve_config: Path) -> Declaration:
    """The project's declaration, loaded and checked once; a bad file fails the tests that
    use it with one line per problem."""
    from stratoserve.declaration import DeclarationError, load_declaration

    try:
        return load_declaration(stratoserve_config)
    except DeclarationError as error:
        raise _failure(str(error)) from None


@pytest.fixture(scope="session")
def stratoserve_stack(
    stratoserve_config: Path,
    stratoserve_declaration: Declaration,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DevStack]:
    """`stratoserve dev` for the project, once per session (see the module's docstring)."""
    from stratoserve.testing import stack
    from stratoserve.testing.stack import StackStartError

    state = tmp_path_factory.mktemp("stratoserve-state")
    try:
        running = stack.start(stratoserve_config, stratoserve_declaration, state)
    except StackStartError as error:
        raise _failure(f"stratoserve.testing: {error}") from None
    try:
        yield running
    finally:
        stack.stop(running)


@pytest.fixture
def stratoserve_client(stratoserve_stack: DevStack) -> Iterator[Client]:
    """A client for the stack with the most generous plan's key."""
    with stratoserve_stack.client() as client:
        yield client


@pytest.fixture
def stratoserve_client_for(stratoserve_stack: DevStack) -> Iterator[Callable[..., Client]]:
    """`stratoserve_client_for(plan, **options)`: a client with that plan's key (`options`
    go to Client: api_version, max_retries, timeout_s); all closed after the test."""
    made: list[Client] = []

    def client_for(plan: str | None = None, **options: Any) -> Client:
        client = stratoserve_stack.client(plan, **options)
        made.append(client)
        return client

    try:
        yield client_for
    finally:
        for client in made:
            client.close()


@pytest.fixture(scope="session")
def stratoserve_moto(stratoserve_declaration: Declaration) -> Iterator[MotoAws]:
    """moto with the job resources, once per session (`stratoserve_aws` empties it after
    each test)."""
    from stratoserve.testing.aws import MotoAws

    aws = MotoAws.start(stratoserve_declaration)
    try:
        yield aws
    finally:
        aws.stop()


@pytest.fixture
def stratoserve_aws(stratoserve_moto: MotoAws) -> Iterator[MotoAws]:
    """The AWS side on moto, fresh for each test: job resources made, and emptied after."""
    try:
        yield stratoserve_moto
    finally:
        stratoserve_moto.reset()


@pytest.fixture(scope="session")
def stratoserve_events(stratoserve_declaration: Declaration) -> SampleEvents:
    """Sample events for the declaration's routes, jobs queue and schedules."""
    from stratoserve.testing.events import SampleEvents

    return SampleEvents(stratoserve_declaration)


def _failure(message: str) -> BaseException:
    """A fixture's failure as the message alone: no traceback, no chained exception."""
    return pytest.fail.Exception(message, pytrace=False)
