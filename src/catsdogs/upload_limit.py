"""ASGI middleware that refuses request bodies over a size limit before they are read whole."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised inside the app when the streamed body passes the limit."""


def limit_message(max_bytes: int) -> str:
    return f"upload too large: the limit is {max_bytes / 1_000_000:g} MB"


class UploadLimit:
    """Answer 413 `{"error": ...}` to any HTTP request whose body is over `max_bytes`.

    A declared Content-Length over the limit is refused before the app runs and before any body byte is
    read. Bodies without one (chunked) or with a false one are counted while they stream in: the read
    that passes the limit raises inside the app, and whatever the app then answers is replaced by 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _send_error(send, 400, "bad Content-Length header")
            return
        if declared is not None and declared > self.max_bytes:
            await _send_error(send, 413, limit_message(self.max_bytes))
            return

        received, over, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # the app answered the refused read (frameworks turn it into a 400): send 413 instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_error(send, 413, limit_message(self.max_bytes))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await _send_error(send, 413, limit_message(self.max_bytes))


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    """The declared body length; None when absent, -1 when malformed."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _send_error(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
