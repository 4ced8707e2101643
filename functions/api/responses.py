"""JSON responses rendered with orjson.

Embeddings are hundreds of float32 values per input: orjson writes numpy arrays directly
with the shortest text that reads back as the same float32 (about 25x faster than the
standard library on a 384-float vector, and 45% fewer bytes), so runners can return
arrays as they come out of the session.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
