"""The local stack's AWS: moto in server mode on 127.0.0.1, a free port.

The runtime, the CLI and the gateway reach it with the same boto3 code they use on AWS;
only the endpoint differs, and the credentials are moto's dummies (never the
developer's).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

REGION = "us-east-1"
# moto accepts any credentials; these keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def client(service: str, endpoint_url: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint_url, region_name=REGION, **DUMMY_CREDENTIALS)


def function_environment(endpoint_url: str) -> dict[str, str]:
    """What a local function needs to reach the local AWS with the default boto3 client."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
    }


class LocalAwsError(RuntimeError):
    """moto could not be started; the message says why."""


class LocalAws:
    def __init__(self) -> None:
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint_url = ""

    def start(self) -> str:
        # moto's ThreadedMotoServer binds inside its thread and waits for it without a
        # timeout: a failure there hangs the caller. Bind here, serve in the thread.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        # One line per call to moto would drown the gateway's own log.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        try:
            server = make_server(
                "127.0.0.1",
                0,
                DomainDispatcherApplication(create_backend_app),
                threaded=True,
                request_handler=MotoRequestHandler,
            )
        except OSError as error:
            raise LocalAwsError(f"cannot start moto on 127.0.0.1: {error}") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="moto")
        self._thread.start()
        host, port = server.server_address[:2]
        self.endpoint_url = f"http://{host!s}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
