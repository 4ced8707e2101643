"""Length-prefixed JSON frames: how the gateway and a local execution environment talk over
a pair of pipes (stdout stays free for the function's own logs)."""

from __future__ import annotations

import struct
from typing import Any

import orjson

HEADER = struct.Struct(">I")


def encode(message: Any) -> bytes:
    # orjson: every request's event and answer pass here twice, once on each side.
    payload = orjson.dumps(message)
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Any:
    return orjson.loads(payload)
