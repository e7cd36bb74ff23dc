"""A limit on request bodies as plain ASGI middleware, enforced before a body is read whole.

A request whose ``Content-Length`` exceeds the limit is answered 413 at once, its body unread. Any other
request body -- chunked ones included, which state no length -- is read from ``receive()`` message by message
while its bytes are counted; the moment the count passes the limit the request is answered 413 and nothing
more is read. A body within the limit is handed to the application as one message.
"""

from __future__ import annotations

import json


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


class BodyLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` get 413 (JSON ``{"detail": ...}``)."""

    def __init__(self, app, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a whole number >= 1, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes

    async def _answer(self, send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, what: str) -> str:
        return (f"the request body {what} is over the limit of {self.max_bytes} bytes ({_mib(self.max_bytes)}, "
                f"lossdial serve --max-body-mb); send fewer inputs per request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if length:
            try:
                n = int(length[0])
            except ValueError:
                return await self._answer(send, 400, f"Content-Length {length[0][:40]!r} is not a number")
            if n > self.max_bytes:
                return await self._answer(send, 413, self._too_large(f"({n} bytes by its Content-Length)"))
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client left; nothing to answer
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                return await self._answer(send, 413, self._too_large(f"(more than {self.max_bytes} bytes received)"))
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server's receive does

        await self.app(scope, replay, send)
