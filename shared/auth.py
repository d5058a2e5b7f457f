"""Optional API keys: when configured, every `/api/` route needs `Authorization: Bearer <key>`.

Reads included (a task list is private data), unless `public_reads` opens plain list and
by-id reads to anonymous clients; deleted tasks, history, time travel and the event feed always
need a key when keys are set. A request carrying more than one `Authorization` header is
refused whatever it holds: a proxy reading the first and the app reading the last would
disagree about who is asking.

Keys have names (`TASKS_API_KEYS={"name": "key"}`); a plain list of keys gets derived,
non-secret names. A named key may be limited to scopes (`{"name": {"key": "...", "scopes":
["read"]}}`): `read` for lists and tasks, `write` for POST, PATCH and DELETE, `audit` for
history, time travel and the event feed; a key without scopes may do everything. The name of
the key a request was made with is put in the request's state as its `actor`, recorded in
the events it appends; a request made while no key is needed is `anonymous`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import ApiKeyEntry
from shared.domain import ANONYMOUS
from shared.errors import error_response

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PRIVILEGED_PARAMETERS = {"include_deleted", "version", "as_of"}
TIME_TRAVEL_PARAMETERS = {"version", "as_of"}
SCOPES = ("read", "write", "audit")
# The reads `public_reads` opens: the list and a task by id (no sub-resource, no other route).
PUBLIC_READ = re.compile(r"/api/v1/tasks(/[^/]+)?")
# Audit reads: a task's history and the event feed (time travel is a parameter of a read).
_AUDIT_PATH = re.compile(r"/api/v1/tasks/[^/]+/history|/api/v1/events(/.*)?")

ConfiguredKeys = Mapping[str, str | ApiKeyEntry] | Sequence[str]


def key_id(key: str) -> str:
    """A stable, non-secret name for a key (scopes idempotency keys per client)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: bytes
    scopes: frozenset[str]


def api_keys(configured: ConfiguredKeys) -> list[ApiKey]:
    """Each configured key with its name and scopes (`key-<key_id>` names a plain list's)."""
    if not isinstance(configured, Mapping):
        return [ApiKey(f"key-{key_id(key)}", key.encode(), frozenset(SCOPES)) for key in configured]
    keys = []
    for name, entry in configured.items():
        if isinstance(entry, str):
            keys.append(ApiKey(name, entry.encode(), frozenset(SCOPES)))
        else:
            scopes = frozenset(SCOPES if entry.scopes is None else entry.scopes)
            keys.append(ApiKey(name, entry.key.encode(), scopes))
    return keys


def actor(connection: HTTPConnection) -> str:
    """The name of the key this request was made with, `anonymous` when none was needed."""
    name: str = connection.scope.get("state", {}).get("actor", ANONYMOUS)
    return name


def _parameters(scope: Scope) -> set[str]:
    query = scope.get("query_string", b"").decode("latin-1")
    return {name for name, _ in parse_qsl(query, True)}


def required_scope(scope: Scope) -> str:
    """The scope a request needs: `write` for writes, `audit` for history, time travel and the
    event feed, `read` for every other read."""
    if scope["method"] in WRITE_METHODS:
        return "write"
    if _AUDIT_PATH.fullmatch(scope["path"]) or _parameters(scope) & TIME_TRAVEL_PARAMETERS:
        return "audit"
    return "read"


def operation_scope(method: str, path: str) -> str:
    """`required_scope` for an OpenAPI operation (time travel is described on the operation)."""
    if method.upper() in WRITE_METHODS:
        return "write"
    concrete = path.replace("{task_id}", "x")
    return "audit" if _AUDIT_PATH.fullmatch(concrete) else "read"


class ApiKeyGate:
    """401 when a key is needed and missing, 403 when it is wrong or lacks the scope; open when
    no keys are set."""

    def __init__(self, app: ASGIApp, keys: ConfiguredKeys, public_reads: bool = False) -> None:
        self.app = app
        self.keys = api_keys(keys)
        self.public_reads = public_reads

    def _needs_key(self, scope: Scope) -> bool:
        if not self.public_reads or scope["method"] not in ("GET", "HEAD"):
            return True
        if not PUBLIC_READ.fullmatch(scope["path"]):
            return True
        return bool(_parameters(scope) & PRIVILEGED_PARAMETERS)

    def _match(self, given: bytes) -> ApiKey | None:
        found = None
        for key in self.keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key.secret):
                found = key
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["actor"] = ANONYMOUS
        if not self.keys or not scope["path"].startswith("/api/"):
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
        key = self._match(token)
        if key is None:
            await error_response(403)(scope, receive, send)
            return
        needed = required_scope(scope)
        if needed not in key.scopes:
            refused = error_response(403, {"scope": f"This key lacks the {needed!r} scope"})
            await refused(scope, receive, send)
            return
        state["api_key_id"] = key_id(token.decode("latin-1"))
        state["actor"] = key.name
        await self.app(scope, receive, send)
