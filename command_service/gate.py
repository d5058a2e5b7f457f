"""The 413/415 gate before the write routes: a body over the limit (chunked ones too) or of
another media type is refused before any route parses it, in the error shape.

It sits inside the request-id and metrics middleware, so 413 and 415 are counted and echo the
request id.
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response
from shared.jsonhttp import HttpMiddleware

MEDIA_TYPES = {
    "POST": {"application/json"},
    "PATCH": {"application/json", "application/merge-patch+json"},
}
CHARSETS = {"", "charset=utf-8", 'charset="utf-8"'}
SIZED = {"POST", "PATCH", "DELETE"}
"""Methods whose bodies are held to the size limit (a DELETE's body is not read otherwise)."""


DISCARD_FACTOR = 4
"""A refused body up to this many times the limit is read to its end before the 413."""


class BodyGate(HttpMiddleware):
    """413 for bodies over the limit (chunked ones too) and 415 for other types, before parsing.

    A DELETE is held to the limit too (413 before any other answer), its type is not checked.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in SIZED or not _routed(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._discard(receive, int(length) if length.isdigit() else 0)
            await _reply(scope, receive, send, 413, self._too_large())
            return
        media = headers.get(b"content-type", b"").decode("latin-1").lower()
        kind, _, params = media.partition(";")
        charset = params.replace(" ", "").replace("\t", "")
        accepted = MEDIA_TYPES.get(scope["method"])
        if accepted is not None and (kind.strip() not in accepted or charset not in CHARSETS):
            types = " or ".join(sorted(accepted))
            advice = {"Content-Type": f"Send {types}, with charset=utf-8 or no charset"}
            await _reply(scope, receive, send, 415, advice)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._discard(receive, 0)
                await _reply(scope, receive, send, 413, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"Bodies are limited to {self.max_bytes} bytes"

    async def _discard(self, receive: Receive, declared: int) -> None:
        """Read (without keeping) a refused body a sender is still writing, up to a bound.

        Answering before the body is read and closing makes a proxy in front (the gateway)
        fail to write the rest and answer 502 instead of our 413; a body far above the limit
        is cut off instead.
        """
        if declared > DISCARD_FACTOR * self.max_bytes:
            return
        read = 0
        while read <= DISCARD_FACTOR * self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _routed(scope: Scope) -> bool:
    """Some route serves this method on this path; otherwise the router's 404 or 405 comes first.
    (Outside an app, as in the gate's unit tests, every request is gated.)"""
    app = scope.get("app")
    if app is None:
        return True
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


async def _reply(
    scope: Scope, receive: Receive, send: Send, status: int, details: dict[str, str] | str
) -> None:
    response = error_response(status, details, {"Connection": "close"} if status == 413 else None)
    await response(scope, receive, send)
