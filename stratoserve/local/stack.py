"""`stratoserve dev`: starts every declared function's execution environments, then the
gateway, and records the running stack under the state directory for other commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stratoserve.declaration import load_declaration, models_dir
from stratoserve.declaration.loader import MODELS_DIR_ENV
from stratoserve.declaration.schema import HTTP_HANDLER
from stratoserve.local.environments import FunctionConfig, FunctionPool, close_all
from stratoserve.local.gateway import Gateway
from stratoserve.local.keys import DEV_TENANT, ApiKey, StaticKeys, key_id_for
from stratoserve.local.routes import RouteTable

if TYPE_CHECKING:
    from collections.abc import Callable

    from stratoserve.declaration import Declaration

STATE_DIR_ENV = "STRATOSERVE_STATE_DIR"


class StackError(Exception):
    """The local stack cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class DevOptions:
    config: Path
    host: str
    port: int
    api_key: str
    state_dir: Path


def state_dir(project_root: Path) -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or project_root / ".stratoserve")


def missing_artifacts(declaration: Declaration, source: Path) -> list[str]:
    root = models_dir(declaration, source)
    missing = []
    for name, spec in declaration.models.items():
        for version, version_spec in spec.versions.items():
            for relative in (version_spec.artifact, version_spec.tokenizer):
                if relative and not (root / relative).is_file():
                    missing.append(f"{name} version {version}: {root / relative}")
    return missing


def function_configs(declaration: Declaration, source: Path) -> dict[str, FunctionConfig]:
    shared = {
        "STRATOSERVE_CONFIG": str(source.resolve()),
        MODELS_DIR_ENV: str(models_dir(declaration, source)),
        "POWERTOOLS_SERVICE_NAME": declaration.project.name,
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }
    return {
        name: FunctionConfig(
            name=name,
            handler=HTTP_HANDLER,
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            max_environments=spec.local_environments,
            environment={**shared, "STRATOSERVE_FUNCTION": name},
        )
        for name, spec in declaration.functions.items()
    }


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StackError(
            f"cannot listen on {host}:{port}: {error.strerror}; pass --port with a free port "
            "(or --port 0 for any)"
        ) from None
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


async def serve(options: DevOptions, *, on_ready: Callable[[str, dict[str, float]], None]) -> None:
    """Run the stack until interrupted; `on_ready(url, init_ms_by_function)` once it serves."""
    import uvicorn

    declaration = load_declaration(options.config)
    missing = missing_artifacts(declaration, options.config)
    if missing:
        raise StackError(
            f"{len(missing)} model artifact(s) missing, e.g. {missing[0]}; "
            "run `stratoserve models build` first"
        )
    sock = bind(options.host, options.port)
    project_root = options.config.resolve().parent
    pools = {
        name: FunctionPool(config, cwd=project_root)
        for name, config in function_configs(declaration, options.config).items()
    }
    record = options.state_dir / "stack.json"
    try:
        # One warm environment per function before the first request, like provisioned
        # concurrency of 1; later environments cold-start on demand.
        started = await asyncio.gather(*(pool.prestart(1) for pool in pools.values()))
        init_ms = {
            name: environments[0].init_ms or 0.0
            for name, environments in zip(pools, started, strict=True)
        }
        dev_key = ApiKey(
            key_id=key_id_for(options.api_key), tenant=DEV_TENANT, value=options.api_key
        )
        gateway = Gateway(
            routes=RouteTable.from_declaration(declaration), keys=StaticKeys([dev_key]), pools=pools
        )
        config = uvicorn.Config(
            gateway,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        _write_record(record, url, pools)
        on_ready(url, init_ms)
        await server.serve(sockets=[sock])
    finally:
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
        await close_all(pools)
        sock.close()


def _write_record(record: Path, url: str, pools: dict[str, FunctionPool]) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "url": url,
        "pid": os.getpid(),
        "started_at": time.time(),
        "functions": sorted(pools),
    }
    temporary = record.with_suffix(".tmp")
    temporary.write_text(json.dumps(content, indent=2))
    temporary.replace(record)
