"""Optional API keys: when configured, every `/api/` route needs `Authorization: Bearer <key>`.

Reads included (a task list is private data), unless `public_reads` opens plain list and
by-id reads to anonymous clients; deleted tasks, history, time travel and the event feed always
need a key when keys are set. A request carrying more than one `Authorization` header is
refused whatever it holds: a proxy reading the first and the app reading the last would
disagree about who is asking.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import error_response

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PRIVILEGED_PARAMETERS = {"include_deleted", "version", "as_of"}
# The reads `public_reads` opens: the list and a task by id (no sub-resource, no other route).
_PUBLIC_READ = re.compile(r"/api/v1/tasks(/[^/]+)?")


def key_id(key: str) -> str:
    """A stable, non-secret name for a key (scopes idempotency keys per client)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeyGate:
    """401 when a key is needed and missing, 403 when it is wrong; open when no keys are set."""

    def __init__(self, app: ASGIApp, keys: list[str], public_reads: bool = False) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.public_reads = public_reads

    def _needs_key(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if not path.startswith("/api/"):
            return False
        if not self.public_reads or scope["method"] not in ("GET", "HEAD"):
            return True
        if not _PUBLIC_READ.fullmatch(path):
            return True
        query = scope.get("query_string", b"").decode("latin-1")
        return any(name in PRIVILEGED_PARAMETERS for name, _ in parse_qsl(query, True))

    def _matches(self, given: bytes) -> bool:
        found = False
        for key in self.keys:  # compare with every key, in constant time each
            found |= hmac.compare_digest(given, key)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        headers = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(headers) > 1:
            refused = error_response(
                401, {"Authorization": "Given more than once"}, {"WWW-Authenticate": "Bearer"}
            )
            await refused(scope, receive, send)
            return
        if not self._needs_key(scope):
            await self.app(scope, receive, send)
            return
        scheme, _, token = (headers[0] if headers else b"").partition(b" ")
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
