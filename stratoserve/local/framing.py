"""Length-prefixed JSON frames: how the gateway and a local execution environment talk over
a pair of pipes (stdout stays free for the function's own logs)."""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct(">I")


def encode(message: Any) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Any:
    return json.loads(payload)
