"""A cap on request headers at the local gateway, as API Gateway has one.

API Gateway's REST quota is 10,240 bytes for the request line and headers together; the
gateway answers a larger request 431 (RFC 6585) with a JSON message (gateway.py).
uvicorn's httptools parser has no cap of its own: it buffered 64 MB of headers before the
gateway saw the request. So the server's protocol stops reading a request whose headers
are still incomplete after CONNECTION_CAP_BYTES, and answers 431 at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_HEADER_BYTES = 10240
"""API Gateway's quota: request line and header values together."""
CONNECTION_CAP_BYTES = 64 * 1024
"""What the server reads of a request before its headers end. More than MAX_HEADER_BYTES:
a read may also carry the end of the connection's previous request, and the exact check,
with API Gateway's answer, is the gateway's."""
TOO_LARGE_BODY = b'{"message":"Request Header Fields Too Large"}'


def request_header_bytes(scope: Mapping[str, Any]) -> int:
    """The request line and headers as they came, roughly as API Gateway counts them."""
    line = len(scope["method"]) + len(scope.get("raw_path") or b"") + 1
    line += len(scope.get("query_string") or b"")
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def server_options() -> dict[str, Any]:
    """uvicorn.Config's keyword arguments that cap the headers a connection may send."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: h11 has a cap of its own (its answer is a 400)
        return {"http": "h11", "h11_max_incomplete_event_size": CONNECTION_CAP_BYTES}

    class CappedHeaders(HttpToolsProtocol):
        _in_headers = False
        _header_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            self._header_bytes = 0

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._in_headers or self.transport.is_closing():
                return
            self._header_bytes += len(data)
            if self._header_bytes > CONNECTION_CAP_BYTES:
                self._in_headers = False
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-type: application/json\r\n"
                    b"x-amzn-errortype: RequestHeaderFieldsTooLargeException\r\n"
                    b"content-length: " + str(len(TOO_LARGE_BODY)).encode() + b"\r\n"
                    b"connection: close\r\n\r\n" + TOO_LARGE_BODY
                )
                self.transport.close()

    return {"http": CappedHeaders}
