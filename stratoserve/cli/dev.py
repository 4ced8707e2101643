"""`stratoserve dev`: the local stack, API Gateway and Lambda on this machine."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from stratoserve.cli._common import UsageError, config_option, console

if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine
    from typing import Any

    from stratoserve.cli._common import Subcommands
    from stratoserve.cli.context import CliContext
    from stratoserve.declaration import Declaration


def add_parser(commands: Subcommands) -> None:
    dev = commands.add_parser(
        "dev",
        help="run the local stack: gateway + local Lambda environments",
        description="Serve the declared API on this machine, the way API Gateway and Lambda "
        "serve it on AWS: keys enforced, real proxy events, one process per environment.",
    )
    config_option(dev)
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    dev.add_argument(
        "--api-key",
        help="the dev API key (default: $STRATOSERVE_DEV_API_KEY, else the one kept in "
        ".stratoserve/, else a new one). Prefer the variable: a command line is visible to "
        "every user of the machine (ps)",
    )
    dev.add_argument("--quiet", action="store_true", help="no access log lines")
    dev.set_defaults(command=dev_command)


def dev_command(context: CliContext, arguments: argparse.Namespace) -> int:
    from stratoserve.local.environments import InvocationError
    from stratoserve.local.keys import BadKeyError, resolve_dev_key
    from stratoserve.local.stack import DevOptions, StackError, secure_state_dir, serve

    declaration = context.declaration
    if not 0 <= arguments.port <= 65535:
        raise UsageError(f"--port {arguments.port}: must be 0..65535")
    secure_state_dir(context.state)  # before the dev key is kept there
    try:
        api_key, key_source = resolve_dev_key(arguments.api_key, context.state)
    except BadKeyError as error:
        raise UsageError(str(error)) from None
    logging.basicConfig(
        level=logging.WARNING if arguments.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    options = DevOptions(
        config=context.config,
        host=arguments.host,
        port=arguments.port,
        api_key=api_key,
        state_dir=context.state,
    )

    def ready(url: str, init_ms: dict[str, float], notes: list[str]) -> None:
        inits = ", ".join(f"{name} {ms:.0f} ms" for name, ms in sorted(init_ms.items()))
        console.print(
            f"[bold green]stratoserve dev[/] listening on [bold]{url}[/]", highlight=False
        )
        console.print(f"  functions ready (cold start): {inits}", highlight=False)
        for note in notes:
            console.print(f"  {note}", highlight=False, soft_wrap=True)
        # The dev key is shown here on purpose, once per start: it is the local stack's
        # login, never logged anywhere else.
        console.print(f"  API key ({key_source}): [bold]{api_key}[/]", highlight=False)
        console.print("  try:", highlight=False)
        for example in curl_examples(url, api_key, declaration):
            console.print(f"    {example}", highlight=False, soft_wrap=True)
        console.file.flush()

    try:
        run_event_loop(serve(options, on_ready=ready))
    except StackError as error:
        raise UsageError(str(error)) from None
    except InvocationError as error:
        # A function that cannot start (a model that does not load, a broken import):
        # its traceback is above, in the function's own output, as Lambda would log it.
        raise UsageError(f"{error}; see the function's output above") from None
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed (the gateway's per-request overhead is mostly the event
    loop's), the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def curl_examples(url: str, api_key: str, declaration: Declaration) -> list[str]:
    newest = max(declaration.api, key=lambda version: int(version[1:]))
    key = f"-H 'x-api-key: {api_key}'"
    examples = [f"curl -s {url}/{newest}/models {key}"]
    for model in declaration.api[newest].models:
        if declaration.models[model].task == "embed":
            body = '{"inputs": ["A man is eating food."]}'
            examples.append(
                f"curl -s {url}/{newest}/predict/{model} {key} "
                f"-H 'content-type: application/json' -d '{body}'"
            )
            break
    return examples
