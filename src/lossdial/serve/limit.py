"""A limit on request bodies as plain ASGI middleware, enforced before a body is read whole.

A request whose ``Content-Length`` exceeds the limit is answered 413 without reading its body into memory.
Any other request body -- chunked ones included, which state no length -- is read from ``receive()`` message by
message while its bytes are counted; the moment the count passes the limit the request is answered 413 and
nothing more is kept. A body within the limit is handed to the application as one message.

Before a 413 the rest of a body slightly over the limit (at most ``DRAIN_BYTES`` more, for at most
``DRAIN_SECONDS``) is read and discarded: a client that has already written its whole body then reads the 413,
instead of a connection reset (closing a socket with unread data makes the kernel send RST, which can destroy
the answer in the client's buffer). Larger or stalled bodies are answered at once.
"""

from __future__ import annotations

import asyncio
import json

DRAIN_BYTES = 2**20
DRAIN_SECONDS = 1.0


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

    @staticmethod
    async def _drain(receive, budget: int) -> None:
        """Read and discard request-body messages until the body ends, ``budget`` bytes or DRAIN_SECONDS."""
        loop = asyncio.get_running_loop()
        end = loop.time() + DRAIN_SECONDS
        while budget > 0:
            left = end - loop.time()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

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
                if n <= self.max_bytes + DRAIN_BYTES:
                    await self._drain(receive, n)
                return await self._answer(send, 413, self._too_large(f"({n} bytes by its Content-Length)"))
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client left; nothing to answer
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, DRAIN_BYTES)
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
