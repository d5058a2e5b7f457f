"""Optional API keys: when configured, writes and privileged reads need `Authorization: Bearer`."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import error_response

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PRIVILEGED_PARAMETERS = {"include_deleted", "version", "as_of"}


def key_id(key: str) -> str:
    """A stable, non-secret name for a key (scopes idempotency keys per client)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeyGate:
    """401 when a key is needed and missing, 403 when it is wrong; open when no keys are set."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    def _needs_key(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if not path.startswith("/api/"):
            return False
        if scope["method"] in WRITE_METHODS or path.endswith("/history"):
            return True
        query = scope.get("query_string", b"").decode("latin-1")
        return any(name in PRIVILEGED_PARAMETERS for name, _ in parse_qsl(query, True))

    def _matches(self, given: bytes) -> bool:
        found = False
        for key in self.keys:  # compare with every key, in constant time each
            found |= hmac.compare_digest(given, key)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not self._needs_key(scope):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            response = error_response(401, None, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        token = token.strip()
        if not self._matches(token):
            await error_response(403)(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key_id"] = key_id(token.decode("latin-1"))
        await self.app(scope, receive, send)
