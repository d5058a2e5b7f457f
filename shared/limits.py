"""The app's own request limits: query length (414), header size (431), body-read timeout (408)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import Settings
from shared.errors import ApiError, error_response
from shared.jsonhttp import HttpMiddleware

# The rest of an oversized or unfinished request may still be on the wire: never reuse it.
_CLOSE = {"Connection": "close"}


class RequestTimeout(ApiError):
    """The request body did not arrive in time."""

    status = 408

    def __init__(self) -> None:
        super().__init__(None, dict(_CLOSE))


class RequestLimits(HttpMiddleware):
    """Refuses what is too long before any route sees it, and bounds the time a body may take.

    The HTTP server gives the app a request only once its headers are complete, so limits on the
    headers themselves (and on clients that never finish them) stay with the server and gateway.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_query_length: int,
        max_header_bytes: int,
        body_read_timeout: float,
    ) -> None:
        super().__init__(app)
        self.max_query_length = max_query_length
        self.max_header_bytes = max_header_bytes
        self.body_read_timeout = body_read_timeout

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if len(scope.get("query_string", b"")) > self.max_query_length:
            advice = f"The query string is limited to {self.max_query_length} bytes"
            await error_response(414, advice, _CLOSE)(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            advice = f"Header names and values are limited to {self.max_header_bytes} bytes"
            await error_response(431, advice, _CLOSE)(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)  # no route reads a body here: nothing to time
            return

        loop = asyncio.get_running_loop()
        deadline: float | None = None
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal deadline, body_done
            if body_done:
                # Only the body is bounded; later reads wait for a disconnect, however long.
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.body_read_timeout
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise RequestTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except RequestTimeout as exc:
            # Raised where no exception handler sits (a gate that reads the body before routing).
            if started:
                raise
            await error_response(exc.status, None, exc.headers)(scope, receive, send)


def request_limits(settings: Settings) -> dict[str, Any]:
    """`RequestLimits` options from the settings."""
    return {
        "max_query_length": settings.max_query_length,
        "max_header_bytes": settings.max_header_bytes,
        "body_read_timeout": settings.body_read_timeout_seconds,
    }
