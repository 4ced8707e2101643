"""The local stack's AWS: moto in server mode on 127.0.0.1, a free port.

The runtime, the CLI and the gateway reach it with the same boto3 code they use on AWS;
only the endpoint and the credentials differ: never the developer's, but the stack's own
(access key id `local`, the secret the stack's token), and moto's server answers only
requests signed with them (loopback.py says why and how). moto's CORS is off: no web page
may read it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from stratoserve.local.loopback import (
    ACCESS_KEY_ID,
    Refusal,
    check_origin,
    check_token,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

logger = logging.getLogger("stratoserve.aws")

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": "local"}
"""What a LocalAws made without a token accepts: for tests that run it in their own
process. `stratoserve dev` always gives it the stack's random token."""
REBIND_S = 10.0
"""How long a restart keeps trying to bind its port again."""


def credentials(token: str | None = None) -> dict[str, str]:
    """boto3's credential arguments for a local AWS with `token` (None: the test one)."""
    if token is None:
        return dict(DUMMY_CREDENTIALS)
    return {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": token}


def client(service: str, endpoint_url: str, token: str | None = None) -> Any:
    """A boto3 client of the local AWS at `endpoint_url`, signing with the stack's token
    (`stack.json`'s "token"; None: a LocalAws made without one, in a test)."""
    import boto3
    from botocore.config import Config

    # S3 as the functions' own client makes it (functions/runtime/aws.py): path-style and
    # SigV4, so its presigned URLs carry a signature the local AWS verifies.
    config = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=config if service == "s3" else None,
        **credentials(token),
    )


def function_environment(endpoint_url: str, token: str | None = None) -> dict[str, str]:
    """What a local function needs to reach the local AWS with the default boto3 client:
    its credentials sign every call, to moto and to the local Invoke API, as a function's
    role does on AWS."""
    signing = credentials(token)
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": signing["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": signing["aws_secret_access_key"],
    }


class LocalAwsError(RuntimeError):
    """moto could not be started (or started again); the message says why."""


class LocalAws:
    """moto's HTTP server in a thread of the stack's process. Its state (queues, tables,
    buckets) lives in moto's in-process backends, not in the server: `restart` takes the
    server down and brings it back on the same port with everything still there, as AWS
    keeps your queue through an outage of its endpoint.

    It answers only requests signed with `token` as the secret (None: the test
    credentials, DUMMY_CREDENTIALS), from 127.0.0.1/localhost, without an Origin."""

    def __init__(self, token: str | None = None) -> None:
        self.token = credentials(token)["aws_secret_access_key"]
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.endpoint_url = ""
        self.port = 0
        self.restarts = 0
        self._stopped = threading.Event()

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:`port` (0: a free port); the endpoint URL."""
        self._stopped.clear()
        return self._serve(port)

    def _serve(self, port: int, *, restarting: bool = False) -> str:
        # moto's ThreadedMotoServer binds inside its thread and waits for it without a
        # timeout: a failure there hangs the caller. Bind here, serve in the thread.
        with self._lock:
            if self._server is not None:
                return self.endpoint_url
            if self._stopped.is_set():
                # stop() came during a restart's down time: it stays down.
                return self.endpoint_url
            # One line per call to moto would drown the gateway's own log.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            listener = _listen(port)
            try:
                server = _moto_server(listener, self.token)
            finally:
                listener.close()  # the server holds a duplicate
            self.port = int(server.server_address[1])
            self.endpoint_url = f"http://127.0.0.1:{self.port}"
            if restarting:
                self.restarts += 1  # before `up` turns true: a reader never sees one alone
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="moto")
            self._thread.start()
            return self.endpoint_url

    def stop(self) -> None:
        """Stop serving for good (a restart under way does not bring it back)."""
        self._stopped.set()
        self._take_down()

    def _take_down(self) -> None:
        """The port refuses connections, and the open ones are dropped (their requests may
        have been carried out; their answers are lost, as in a real outage)."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()  # serve_forever returns and closes the listening socket
            server.drop_connections()
        if thread is not None:
            thread.join(timeout=10)

    def restart(self, down_s: float, *, on_down: Callable[[], None] | None = None) -> str:
        """Take the server down for `down_s` seconds, then serve again on the same port with
        the same state. `on_down` is called once it is down. LocalAwsError if the port
        cannot be bound again (another program took it meanwhile)."""
        if not self.up:
            raise LocalAwsError("the local AWS is not running")
        port = self.port
        self._take_down()
        logger.warning("local AWS (moto) down for %.1f s", down_s)
        if on_down is not None:
            on_down()
        if self._stopped.wait(down_s):
            return self.endpoint_url  # the stack is shutting down: stay down
        deadline = time.monotonic() + REBIND_S
        while not self._stopped.is_set():
            try:
                url = self._serve(port, restarting=True)
                break
            except LocalAwsError:
                # A connection's lingering end of the port: it frees itself shortly.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        else:
            return self.endpoint_url
        if self.up:
            logger.warning("local AWS (moto) serving again at %s", url)
        return url


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise LocalAwsError(f"cannot start moto on 127.0.0.1:{port}: {error.strerror}") from None
    return listener


class _Guarded:
    """moto's WSGI app behind the loopback checks (loopback.py): the Host, no Origin, and a
    signature made with the token. Without it, whoever reaches the port could read every
    API key's value (`GET /apikeys?includeValues=true`), the dev key included."""

    def __init__(self, app: Any, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.port = port

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        from werkzeug.wsgi import get_input_stream

        headers = {
            name[5:].replace("_", "-").lower(): value
            for name, value in environ.items()
            if name.startswith("HTTP_")
        }
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers[name.replace("_", "-").lower()] = environ[name]
        refusal = check_origin(headers, self.port)
        if refusal is None:
            # The signature covers the body: read it here, and hand moto a copy.
            body = get_input_stream(environ).read()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ["PATH_INFO"]
            raw_path, _, raw_query = raw.partition("?")
            refusal = check_token(
                method=environ["REQUEST_METHOD"],
                raw_path=raw_path,
                raw_query=raw_query,
                headers=headers,
                body=body,
                token=self.token,
            )
        if refusal is not None:
            return _refuse(refusal, start_response)

        def without_cors(status: str, response_headers: list[tuple[str, str]], *info: Any) -> Any:
            # S3 answers a bucket's own CORS rules; none leaves this port.
            kept = [
                (name, value)
                for name, value in response_headers
                if not name.lower().startswith("access-control-")
            ]
            return start_response(status, kept, *info)

        answer: Iterable[bytes] = self.app(environ, without_cors)
        return answer


def _refuse(refusal: Refusal, start_response: Any) -> list[bytes]:
    import json

    body = json.dumps({"__type": refusal.error_type, "message": refusal.message}).encode()
    start_response(
        f"{refusal.status} {HTTPStatus(refusal.status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-amzn-ErrorType", refusal.error_type),
        ],
    )
    return [body]


def _moto_server(listener: socket.socket, token: str) -> Any:
    """moto's app, without its CORS and behind the loopback checks, in werkzeug's threaded
    server, serving on `listener` (a duplicate of it: the caller closes its own)."""
    from moto.moto_server import werkzeug_app
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import ThreadedWSGIServer

    # moto wraps each service's app in flask_cors (any Origin, credentials allowed) unless
    # MOTO_DISABLE_GLOBAL_CORS was set before moto was imported; the module reads this
    # name when it builds an app, so setting it here turns CORS off whatever the env said.
    werkzeug_app.DISABLE_GLOBAL_CORS = True  # type: ignore[attr-defined]
    port = listener.getsockname()[1]

    class Server(ThreadedWSGIServer):
        """werkzeug's threaded server that knows its open connections, so that stopping
        drops them (otherwise keep-alive connections would go on being served)."""

        def __init__(self, listener: socket.socket) -> None:
            self.connections: set[socket.socket] = set()
            self._connections_lock = threading.Lock()
            super().__init__(
                "127.0.0.1",
                listener.getsockname()[1],
                _Guarded(DomainDispatcherApplication(create_backend_app), token, port),
                handler=MotoRequestHandler,
                fd=listener.fileno(),
            )

        def process_request(self, request: Any, client_address: Any) -> None:
            with self._connections_lock:
                self.connections.add(request)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            with self._connections_lock:
                self.connections.discard(request)
            super().shutdown_request(request)

        def drop_connections(self) -> None:
            with self._connections_lock:
                connections = list(self.connections)
            for connection in connections:
                # shutdown, not close: the handler's thread still owns the descriptor, and
                # its next read or write fails as a dropped connection (quietly).
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    return Server(listener)
