"""Refuse request bodies over a size limit with 413 before anything parses them.

An ASGI middleware (``app.add_middleware(PayloadLimit, max_bytes=...)``): a body with a
``content-length`` over the limit is refused at once; a chunked one is buffered up to
the limit and replayed, or refused as soon as it passes it. The rest of the body is read
and dropped so the client sees the answer instead of a reset connection.
"""

from __future__ import annotations

import json


class PayloadLimit:
    """Refuse bodies over ``max_bytes`` with 413 before anything parses them."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive)  # read (and drop) it so the client sees the answer
            return await self._refuse(send, int(length))
        if length is not None:
            return await self.app(scope, receive, send)
        messages, size = [], 0  # chunked: buffer up to the limit, then replay
        while True:
            msg = await receive()
            messages.append(msg)
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                if msg.get("more_body"):
                    await self._drain(receive)
                return await self._refuse(send, size)
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] != "http.request" or not msg.get("more_body"):
                return

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps(
            {"error": f"payload of {size} bytes exceeds serving.max_payload_bytes "
             f"({self.max_bytes})"}
        ).encode()  # fmt: skip
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
