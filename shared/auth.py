"""Optional API keys: when configured, writes and privileged reads need `Authorization: Bearer`.

Keys have names (`TASKS_API_KEYS={"name": "key"}`); a plain list of keys gets derived,
non-secret names. The name of the key a request was made with is its actor, recorded in the
events it appends; a request made while no key is needed is `anonymous`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.domain import ANONYMOUS
from shared.errors import error_response

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PRIVILEGED_PARAMETERS = {"include_deleted", "version", "as_of"}
PRIVILEGED_PATHS = ("/api/v1/events",)
"""Reads that always need a key when keys are set (with every `/history`)."""


def key_id(key: str) -> str:
    """A stable, non-secret name for a key (scopes idempotency keys per client)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def named_keys(configured: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Name → key: as configured, or `key-<key_id>` for each key of a plain list."""
    if isinstance(configured, Mapping):
        return dict(configured)
    return {f"key-{key_id(key)}": key for key in configured}


def actor(connection: HTTPConnection) -> str:
    """The name of the key this request was made with, `anonymous` when none was needed."""
    name: str = connection.scope.get("state", {}).get("actor", ANONYMOUS)
    return name


class ApiKeyGate:
    """401 when a key is needed and missing, 403 when it is wrong; open when no keys are set."""

    def __init__(self, app: ASGIApp, keys: Mapping[str, str] | Sequence[str]) -> None:
        self.app = app
        self.keys = [(name, key.encode()) for name, key in named_keys(keys).items()]

    def _needs_key(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if not path.startswith("/api/"):
            return False
        if (
            scope["method"] in WRITE_METHODS
            or path.endswith("/history")
            or path in PRIVILEGED_PATHS
        ):
            return True
        query = scope.get("query_string", b"").decode("latin-1")
        return any(name in PRIVILEGED_PARAMETERS for name, _ in parse_qsl(query, True))

    def _match(self, given: bytes) -> str | None:
        found = None
        for name, key in self.keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key):
                found = name
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["actor"] = ANONYMOUS
        if not self.keys or not self._needs_key(scope):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            response = error_response(401, None, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        token = token.strip()
        name = self._match(token)
        if name is None:
            await error_response(403)(scope, receive, send)
            return
        state["api_key_id"] = key_id(token.decode("latin-1"))
        state["actor"] = name
        await self.app(scope, receive, send)
