"""Optional API keys: when configured, every `/api/` route needs `Authorization: Bearer <key>`.

Reads included (a task list is private data), unless `public_reads` opens plain list and
by-id reads to anonymous clients; deleted tasks, history, time travel and the event feed always
need a key when keys are set. A request carrying more than one `Authorization` header is
refused whatever it holds: a proxy reading the first and the app reading the last would
disagree about who is asking.

Which reads need the `audit` scope and which reads `public_reads` opens are not known here: the
services that serve those reads hand them in as `AccessRules`.

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
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import ApiKeyEntry, Settings
from shared.domain import ANONYMOUS
from shared.errors import error_response
from shared.jsonhttp import HttpMiddleware
from shared.openapi import BEARER

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SCOPES = ("read", "write", "audit")


@dataclass(frozen=True)
class AccessRules:
    """What the services say about their reads (paths are full-match regular expressions).

    `public_paths`: the reads `public_reads` opens to anonymous clients; `audit_paths`: the
    reads that need the `audit` scope; `audit_parameters`: query parameters that make any read
    an audit read (time travel); `private_parameters`: parameters that keep a public read
    behind a key (the audit parameters do too). Every other read needs `read`, every write
    `write`.
    """

    public_paths: tuple[str, ...] = ()
    audit_paths: tuple[str, ...] = ()
    audit_parameters: frozenset[str] = frozenset()
    private_parameters: frozenset[str] = frozenset()

    @cached_property
    def _public(self) -> re.Pattern[str] | None:
        return _any_of(self.public_paths)

    @cached_property
    def _audit(self) -> re.Pattern[str] | None:
        return _any_of(self.audit_paths)

    def public(self, path: str) -> bool:
        return self._public is not None and self._public.fullmatch(path) is not None

    def audit(self, path: str) -> bool:
        return self._audit is not None and self._audit.fullmatch(path) is not None

    def private(self, parameters: set[str]) -> bool:
        return bool(parameters & (self.private_parameters | self.audit_parameters))


def _any_of(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


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


def required_scope(scope: Scope, rules: AccessRules) -> str:
    """The scope a request needs: `write` for writes, `audit` for the audit reads and time
    travel, `read` for every other read."""
    if scope["method"] in WRITE_METHODS:
        return "write"
    if rules.audit(scope["path"]) or _parameters(scope) & rules.audit_parameters:
        return "audit"
    return "read"


def operation_scope(method: str, path: str, rules: AccessRules) -> str:
    """`required_scope` for an OpenAPI operation (time travel is described on the operation)."""
    if method.upper() in WRITE_METHODS:
        return "write"
    return "audit" if rules.audit(path.replace("{task_id}", "x")) else "read"


SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "When API keys are configured (TASKS_API_KEYS), every /api/ operation needs "
    "a key holding the scope listed on it: read (lists and tasks), write (POST, PATCH, DELETE) "
    "or audit (history, the event feed, and time travel: version or as_of on a task). A key "
    "configured without scopes holds all three. TASKS_PUBLIC_READS=true opens plain list and "
    "by-id reads to anonymous clients. An operation that also lists the empty requirement needs "
    "no key in the deployment that served this document.",
}


def add_security(schema: dict[str, Any], settings: Settings, rules: AccessRules) -> None:
    """The bearer scheme, and on each `/api/` operation the scope it needs (OpenAPI 3.1 lets a
    non-OAuth requirement list role names: here the scopes). Where no key is needed (none are
    configured, or a public read), the operation also lists the empty requirement."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = SECURITY_SCHEME
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/api/"):
            for method, operation in operations.items():
                scope = operation_scope(method, path, rules)
                security: list[dict[str, list[str]]] = [{BEARER: [scope]}]
                public = (
                    settings.public_reads
                    and method in ("get", "head")
                    and rules.public(path.replace("{task_id}", "x"))
                )
                if not settings.api_keys or public:
                    security.append({})
                operation["security"] = security


class ApiKeyGate(HttpMiddleware):
    """401 when a key is needed and missing, 403 when it is wrong or lacks the scope; open when
    no keys are set."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ConfiguredKeys,
        public_reads: bool = False,
        rules: AccessRules | None = None,
    ) -> None:
        super().__init__(app)
        self.keys = api_keys(keys)
        self.public_reads = public_reads
        self.rules = rules or AccessRules()

    def _needs_key(self, scope: Scope) -> bool:
        if not self.public_reads or scope["method"] not in ("GET", "HEAD"):
            return True
        if not self.rules.public(scope["path"]):
            return True
        return self.rules.private(_parameters(scope))

    def _match(self, given: bytes) -> ApiKey | None:
        found = None
        for key in self.keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key.secret):
                found = key
        return found

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        needed = required_scope(scope, self.rules)
        if needed not in key.scopes:
            refused = error_response(403, {"scope": f"This key lacks the {needed!r} scope"})
            await refused(scope, receive, send)
            return
        state["api_key_id"] = key_id(token.decode("latin-1"))
        state["actor"] = key.name
        await self.app(scope, receive, send)
