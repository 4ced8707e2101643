"""The fuzz suite's own schemathesis checks, loaded by `st run` through SCHEMATHESIS_HOOKS
(tests/soak/test_fuzz.py sets it, and the key to look for in STRATOSERVE_FUZZ_KEY).

Besides schemathesis' checks, every answer must be free of stack traces and must not echo
the caller's API key, and the run must have reached the API's logic: a run answered only
with refusals (a key the gateway does not know, a schema whose bodies are all rejected)
would pass every other check.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import schemathesis

if TYPE_CHECKING:
    from schemathesis import Case, CheckContext, Response

KEY_VARIABLE = "STRATOSERVE_FUZZ_KEY"

# What a Python stack trace or an exception's repr leaves in text.
STACK_TRACE = re.compile(
    r"Traceback \(most recent call last\)"
    r'|File "[^"]*", line \d+'
    r"|<class '[\w.]+'>"
    r"| object at 0x[0-9a-f]+"
)
# An error message that is an exception dumped as is ("KeyError: 'inputs'"). A job's own
# `error` may name one on purpose ("TimeoutError: ..."): only error answers are held to it.
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")

MUST_SUCCEED = re.compile(r"^(GET /health|GET /v\d+/models|POST /v\d+/(predict/\w+|jobs))$")
"""The operations a run must have seen answered 2xx at least once."""


def _text(response: Response) -> str:
    return response.content.decode("utf-8", errors="replace")


@schemathesis.check
def no_stack_trace(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No traceback, source line or exception repr in any answer."""
    text = _text(response)
    found = STACK_TRACE.search(text)
    if found is None and response.status_code >= 400:
        found = EXCEPTION_NAME.search(text)
    if found is not None:
        raise AssertionError(f"the answer shows a stack trace or exception: {found.group(0)!r}")
    return None


@schemathesis.check
def no_key_echo(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """The caller's API key is in no answer's body or headers."""
    key = os.environ[KEY_VARIABLE]
    if key in _text(response):
        raise AssertionError("the answer's body echoes the API key")
    for name, values in response.headers.items():
        if any(key in value for value in values):
            raise AssertionError(f"the answer's {name} header echoes the API key")
    return None


@schemathesis.check
class reaches_the_api:  # lower case: `st run --checks` selects a check by its name
    """Every operation in MUST_SUCCEED answered 2xx at least once during the run."""

    def __init__(self) -> None:
        self.tested: set[str] = set()
        self.succeeded: set[str] = set()

    def after_response(self, ctx: CheckContext, response: Response, case: Case) -> None:
        label = case.operation.label
        self.tested.add(label)
        if 200 <= response.status_code < 300:
            self.succeeded.add(label)

    def after_run(self, ctx: Any) -> None:
        missing = sorted(
            label for label in self.tested - self.succeeded if MUST_SUCCEED.match(label)
        )
        if missing:
            raise AssertionError(f"never answered 2xx: {', '.join(missing)}")
