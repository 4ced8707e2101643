"""`serve` in this process, where what it leaves behind outlives it: a start that fails
halfway stops exactly what it had started (the children would otherwise live on under the
test's own process, whose exit would not end them)."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from stratoserve.local.environments import InvocationError
from stratoserve.local.stack import DevOptions, serve
from tests.conftest import DECLARATION_FILE
from tests.integration.stratoserve.local.dev_stack import KEY


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _processes_naming(text: str) -> list[int]:
    """pids whose command line or environment holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if text.encode() in seen:
            found.append(int(entry.name))
    return found


def _moto_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "moto"}


def test_a_function_that_cannot_start_stops_everything_started_before_it(
    built_models: Path, tmp_path: Path
) -> None:
    # The shipped declaration, but digits' model is not an ONNX file: the digits function
    # (and the worker, which carries it) fail at init, after moto, the job resources, the
    # keys and the GPU executor have started, while the other functions are starting.
    models = tmp_path / "models"
    (models / "digits" / "1").mkdir(parents=True)
    (models / "digits" / "1" / "model.onnx").write_bytes(b"not an ONNX model")
    (models / "embed").symlink_to(built_models / "embed")
    text = DECLARATION_FILE.read_text()
    assert 'models_dir = "build/models"' in text, "stratoserve.toml changed: update this test"
    config = tmp_path / "stratoserve.toml"
    config.write_text(text.replace('models_dir = "build/models"', f'models_dir = "{models}"'))
    state = tmp_path / "state"
    port = _free_port()
    options = DevOptions(config=config, host="127.0.0.1", port=port, api_key=KEY, state_dir=state)
    moto_before = _moto_threads()
    ready: list[str] = []

    with pytest.raises(InvocationError, match=r"^(digits|worker): init failed: "):
        asyncio.run(serve(options, on_ready=lambda url, *_: ready.append(url)))

    assert ready == []
    assert not (state / "stack.json").exists()
    # No environment, runtime or GPU executor is left: each names the declaration.
    assert _processes_naming(str(config.resolve())) == []
    assert _moto_threads() <= moto_before
    with socket.socket() as again:  # the gateway's port is free (no SO_REUSEADDR)
        again.bind(("127.0.0.1", port))
