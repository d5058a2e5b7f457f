"""Contract fuzzing: schemathesis sends what the whole-API document allows, and much it does not,
to a real server; every answer must keep the document's statuses, schemas and error shape."""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

import httpx
import hypothesis
import schemathesis
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from shared.text import MAX_TAG
from tests.fuzz.conftest import FUZZ_KEY
from tests.helpers import ROOT, Process

# `make fuzz` raises these; the default suite keeps the run to a couple of minutes.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", "50"))

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": EXAMPLES},
        # The server runs with an API key: the operations the document marks as needing one
        # get it, and schemathesis checks they refuse requests without it.
        "auth": {"openapi": {"bearer": {"bearer": FUZZ_KEY}}},
        "checks": {
            # On, through `accepted_unless_json_schema_cannot_say` below (never disabled).
            "positive_data_acceptance": {"enabled": False},
            # A deleted task is gone from every read of it (see `operations` for its history).
            "use_after_free": {"enabled": True},
            # The one documented 5xx: a wait for a position the read model cannot reach;
            # `no_server_error` below allows it only then.
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
            # The library's refusals plus the app's own size limits: a query string over
            # max_query_length is 414 and oversized headers 431, before any parameter is read.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "414",
                    "415",
                    "422",
                    "428",
                    "429",
                    "431",
                    "5xx",
                ]
            },
        },
        # The contract keeps a deleted task's history readable (an audit log outlives what it
        # records); `deleted_tasks_keep_their_past` below checks that it does.
        "operations": [
            {
                "include-path": "/api/v1/tasks/{task_id}/history",
                "checks": {"use_after_free": {"enabled": False}},
            }
        ],
    }
)

# The committed document, which a unit test keeps equal to what the code generates.
schema = schemathesis.openapi.from_path(ROOT / "shared" / "openapi.json", config=CONFIG)


def error_shape(_: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx and 5xx, documented or not, is `{"error": str, "details": object|str|null}`."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {response.text[:200]}"
    assert set(body) == {"error", "details"}, f"error body keys: {sorted(body)}"
    assert isinstance(body["error"], str)
    details = body["details"]
    assert details is None or isinstance(details, str | dict), f"details: {details!r}"


def no_server_error(_: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No 5xx, but the contract's 503 for a read told to wait for a position (`Retry-After: 1`)."""
    if response.status_code < 500:
        return
    waited = (
        "X-Min-Position" in (case.headers or {})
        or "min_position" in (case.query or {})
        or "tasks_position" in (case.cookies or {})
    )
    assert response.status_code == 503, f"server error {response.status_code}"
    assert waited, "503 without a position to wait for"
    assert response.headers.get("retry-after") == ["1"]


# What JSON Schema cannot say, so data valid by the document may rightly be refused: the
# condition a case must meet, the status and the details key the refusal must carry.
CANNOT_SAY: list[tuple[str, Any, int, str]] = [
    # A due date before today (UTC): "today" is not a constant.
    ("due date before today", lambda c: _past_due_date(c), 422, "due_date"),
    # A stale If-Match: which version is current is state, not shape.
    ("stale If-Match", lambda c: "If-Match" in (c.headers or {}), 412, ""),
    # `version` with `as_of`: JSON Schema has no exclusion between parameters (described).
    ("version with as_of", lambda c: {"version", "as_of"} <= set(c.query or {}), 422, "as_of"),
    # A cursor the service did not issue: only its signature says which.
    ("cursor not issued", lambda c: "cursor" in (c.query or {}), 422, "cursor"),
    # A position beyond the store's head: the head is state.
    ("position beyond head", lambda c: "min_position" in (c.query or {}), 422, "min_position"),
    (
        "header position beyond head",
        lambda c: "X-Min-Position" in (c.headers or {}),
        422,
        "X-Min-Position",
    ),
    (
        "cookie position beyond head",
        lambda c: "tasks_position" in (c.cookies or {}),
        422,
        "tasks_position",
    ),
    # Also beyond JSON Schema, and described in the document: a sort key given twice, and
    # `sort=relevance` without `q` (no pattern can forbid a repeat; parameters cannot depend on
    # each other); `cursor` with `offset` (no exclusion between parameters).
    ("sort key given twice", lambda c: "sort" in (c.query or {}), 422, "sort"),
    ("cursor with offset", lambda c: {"cursor", "offset"} <= set(c.query or {}), 422, "cursor"),
    # 4.0 where an integer goes: JSON Schema's data model cannot tell it from 4; the API's
    # types are strict (a JSON integer), so it is refused.
    ("4.0 for an integer", lambda c: _integral_float(c), 422, "priority"),
    # The feed's text filters are "printable" (Unicode categories, which no portable pattern
    # names).
    ("unprintable feed filter", lambda c: _unprintable_filter(c), 422, "actor"),
    ("unprintable feed filter", lambda c: _unprintable_filter(c), 422, "correlation_id"),
    # A tag whose normal form (NFKC, case-folded) is longer than the limit though the tag as
    # given is not: `¯` is one character sent and two stored. JSON Schema measures what is sent.
    ("tag longer once normalised", lambda c: _tag_grows_past_limit(c), 422, "tags"),
    ("tag longer once normalised", lambda c: _tag_grows_past_limit(c), 422, "tags_all"),
    # An idempotency key an earlier request used with another body: state, like If-Match.
    (
        "idempotency key reused",
        lambda c: "Idempotency-Key" in (c.headers or {}),
        422,
        "Idempotency-Key",
    ),
]


def _conforms(case: schemathesis.Case) -> bool:
    """Whether the case's headers and query values match the document's patterns: the coverage
    phase sends an empty header it could not generate (`If-Match: `) as "positive" data,
    which the document itself calls invalid."""
    for parameter in case.operation.definition.raw.get("parameters", []):
        sent = case.headers if parameter["in"] == "header" else case.query
        value = (sent or {}).get(parameter["name"])
        pattern = parameter.get("schema", {}).get("pattern")
        if isinstance(value, str) and pattern and not re.search(pattern, value):
            return False
    return True


def _unprintable_filter(case: schemathesis.Case) -> bool:
    query = case.query or {}
    return any(
        isinstance(query.get(name), str) and not str(query[name]).isprintable()
        for name in ("actor", "correlation_id")
    )


def _tag_grows_past_limit(case: schemathesis.Case) -> bool:
    body_tags = case.body.get("tags") if isinstance(case.body, dict) else None
    given = [tag for tag in body_tags or [] if isinstance(tag, str)]
    for name in ("tags", "tags_all"):
        value = (case.query or {}).get(name)
        if isinstance(value, str):
            given.extend(value.split(","))
    return any(
        len(unicodedata.normalize("NFKC", tag).strip().casefold()) > MAX_TAG >= len(tag.strip())
        for tag in given
    )


def _integral_float(case: schemathesis.Case) -> bool:
    value = case.body.get("priority") if isinstance(case.body, dict) else None
    return isinstance(value, float) and value.is_integer()


def _past_due_date(case: schemathesis.Case) -> bool:
    due = case.body.get("due_date") if isinstance(case.body, dict) else None
    return isinstance(due, str) and due < datetime.now(UTC).date().isoformat()


def accepted_unless_json_schema_cannot_say(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """schemathesis's positive-data check, except where the case holds one of `CANNOT_SAY`
    and the refusal is that one's (its status, and for a 422 the key it names)."""
    try:
        positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if not _conforms(case):
            return
        details = response.json().get("details") if response.status_code >= 400 else None
        for _, holds, status, key in CANNOT_SAY:
            named = status != 422 or (
                isinstance(details, dict)
                and any(name == key or name.startswith(f"{key}.") for name in details)
            )
            if response.status_code == status and named and holds(case):
                return
        raise


CHECKS = [error_shape, no_server_error, accepted_unless_json_schema_cannot_say]


@schema.parametrize()
def test_every_operation_keeps_its_documented_contract(
    case: schemathesis.Case, api: Process
) -> None:
    case.call_and_validate(base_url=api.url, additional_checks=CHECKS)


def test_linked_sequences_keep_the_contract(api: Process) -> None:
    base = schema.as_state_machine()
    reached: set[str] = set()
    scenarios = [0]
    # Across scenarios: a later scenario may send an idempotency key an earlier one used, and so
    # meet (by the contract) the task that key created then, perhaps deleted since.
    created: dict[str, int] = {}  # task id -> position of its creation
    deleted: dict[str, int] = {}  # task id -> position of its deletion
    task = "/api/v1/tasks/{task_id}"
    # Every link followed with a real task at least once, not only with ids nobody created.
    required = {
        "POST /api/v1/tasks 201",
        f"GET {task} 200",
        f"PATCH {task} 200",
        f"DELETE {task} 204",
        f"GET {task}/history 200",
    }

    class Machine(base):  # type: ignore[misc, valid-type]
        """Follows the document's links: create, then read, update, delete and the history."""

        def setup(self) -> None:
            self.reads = 0
            scenarios[0] += 1

        def before_call(self, case: schemathesis.Case) -> None:
            """Every second read of a task created in this test is sent as a plain REST client
            sends it: the id, no parameter, header or cookie. Random `version`, `as_of` and
            position values almost never name a real state, so without this a run may never
            read a live task at all. A deleted task is read as it is now, not as it was
            (`deleted_tasks_keep_their_past` reads its past)."""
            if case.method != "GET" or case.path != task:
                return
            task_id = str(case.path_parameters["task_id"])
            if task_id in deleted and case.query:
                case.query = {k: v for k, v in case.query.items() if k not in ("version", "as_of")}
            if task_id not in created:
                return
            self.reads += 1
            if self.reads % 2 == 0:
                case.query = {}
                case.headers = {}
                case.cookies = {}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            # The client has the key, as the configured auth gives it to single operations.
            return {"base_url": api.url, "headers": {"Authorization": f"Bearer {FUZZ_KEY}"}}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            super().validate_response(response, case, additional_checks=CHECKS, **kwargs)
            self.deleted_tasks_are_gone(response, case)
            self.created_tasks_are_readable(response, case)
            self.deleted_tasks_keep_their_past(response, case)
            reached.add(f"{case.method} {case.path} {response.status_code}")
            if case.method == "POST" and response.status_code == 201:
                created[response.json()["id"]] = int(response.headers["x-event-position"][0])
            if case.method == "DELETE" and response.status_code == 204:
                position = int(response.headers["x-event-position"][0])
                deleted[str(case.path_parameters["task_id"])] = position

        def created_tasks_are_readable(self, response: Any, case: schemathesis.Case) -> None:
            """A plain read (no parameter, header or cookie) of a live task created in this test
            returns that task at once: reads by id reflect every acknowledged write."""
            task_id = str((case.path_parameters or {}).get("task_id"))
            if case.method != "GET" or case.path != task or task_id not in created:
                return
            if case.query or case.headers or case.cookies or task_id in deleted:
                return
            assert response.status_code == 200, f"read of a live task: {response.status_code}"
            assert response.json()["id"] == task_id

        def deleted_tasks_are_gone(self, response: Any, case: schemathesis.Case) -> None:
            """Refused to writes and hidden from reads at once, yet its history remains."""
            if str((case.path_parameters or {}).get("task_id")) not in deleted:
                return
            if case.path.endswith("/history") or {"version", "as_of"} & set(case.query or {}):
                # schemathesis may send a case without the key (its auth checks); only a request
                # that carried our key must be answered.
                sent_key = response.request.headers.get("Authorization") == f"Bearer {FUZZ_KEY}"
                if not case.query and not case.headers and sent_key:
                    assert response.status_code == 200, "history of a deleted task"
                return
            assert response.status_code >= 400, f"{case.method} of a deleted task answered"

        def deleted_tasks_keep_their_past(self, response: Any, case: schemathesis.Case) -> None:
            """Right after a deletion, the task's history and its versions stay readable."""
            if case.method != "DELETE" or response.status_code != 204:
                return
            path = f"{api.url}/api/v1/tasks/{case.path_parameters['task_id']}"
            version = int(response.headers["etag"][0].strip('"'))
            key = {"Authorization": f"Bearer {FUZZ_KEY}"}
            with httpx.Client(timeout=30, headers=key) as http:
                history = http.get(f"{path}/history")
                before = http.get(path, params={"version": version - 1})
                after = http.get(path, params={"version": version})
            assert history.status_code == 200, history.text
            assert [e["type"] for e in history.json()["events"]][-1] == "TaskSoftDeleted"
            assert before.status_code == 200, before.text
            assert before.json()["deleted"] is False
            assert after.status_code == 200, after.text
            assert after.json()["deleted"] is True

    # Hypothesis refuses to go on when the same choices meet different answers (the server's
    # state moves on); like schemathesis's own runner, start a fresh run then. Failures of the
    # API are never of that kind and stop the test.
    restarts = 0
    # Random bodies are often refused, so keep going (within a bound) until every step was taken.
    while scenarios[0] < SCENARIOS or (not required <= reached and scenarios[0] < 20 * SCENARIOS):
        try:
            Machine.run(
                settings=hypothesis.settings(
                    # Generate only: a replayed or shrunk scenario would not meet the same state.
                    phases=[hypothesis.Phase.generate],
                    # Hypothesis's CI profile (loaded when `CI` is set) derandomizes, which would
                    # make every run of this loop repeat the first one's scenarios.
                    derandomize=False,
                    max_examples=max(SCENARIOS - scenarios[0], 10),
                    stateful_step_count=6,
                    deadline=None,
                    suppress_health_check=list(hypothesis.HealthCheck),
                )
            )
        except FlakyStrategyDefinition:
            restarts += 1
            assert restarts <= 50, "no run got far without diverging"

    assert required <= reached, sorted(reached)
