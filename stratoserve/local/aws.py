"""The local stack's AWS: moto in server mode on 127.0.0.1, a free port.

The runtime, the CLI and the gateway reach it with the same boto3 code they use on AWS;
only the endpoint differs, and the credentials are moto's dummies (never the
developer's).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("stratoserve.aws")

REGION = "us-east-1"
# moto accepts any credentials; these keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
REBIND_S = 10.0
"""How long a restart keeps trying to bind its port again."""


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
    """moto could not be started (or started again); the message says why."""


class LocalAws:
    """moto's HTTP server in a thread of the stack's process. Its state (queues, tables,
    buckets) lives in moto's in-process backends, not in the server: `restart` takes the
    server down and brings it back on the same port with everything still there, as AWS
    keeps your queue through an outage of its endpoint."""

    def __init__(self) -> None:
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
                server = _moto_server(listener)
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


def _moto_server(listener: socket.socket) -> Any:
    """moto's app in werkzeug's threaded server, serving on `listener` (a duplicate of
    it: the caller closes its own)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import ThreadedWSGIServer

    class Server(ThreadedWSGIServer):
        """werkzeug's threaded server that knows its open connections, so that stopping
        drops them (otherwise keep-alive connections would go on being served)."""

        def __init__(self, listener: socket.socket) -> None:
            self.connections: set[socket.socket] = set()
            self._connections_lock = threading.Lock()
            super().__init__(
                "127.0.0.1",
                listener.getsockname()[1],
                DomainDispatcherApplication(create_backend_app),
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
