"""Hostile input: injection-looking text, NUL and invalid UTF-8, huge and deeply nested JSON, long
query strings and headers, thousands of filter items, slow and idle clients. Each is answered
with the contract's error or served normally, never a 5xx, and the worker keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from query_service.queries import PARAMETERS
from shared.config import Settings
from shared.errors import TITLES
from tests.helpers import JSON, Process, running, store_events

SQL_LOOKING = [
    "'; DROP TABLE tasks; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM tasks_events WHERE ('1'='1",
    "1; SELECT pg_sleep(10)",
    "$1 $$ COPY tasks TO '/tmp/x' $$",
    "x' UNION SELECT NULL, version() --",
    "%' OR '%'='",
    "\\'; -- /* */ ;",
]


def assert_error(response: httpx.Response, status: int, key: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == TITLES[status]
    assert set(body) == {"error", "details"}
    if key is not None:
        assert key in body["details"], body


async def create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    response = await client.post("/api/v1/tasks", json={"title": "Task", **fields})
    assert response.status_code == 201, response.text
    return response


# --- SQL-looking text ---------------------------------------------------------------------------


async def test_sql_looking_text_in_every_field_is_stored_and_read_back_exactly(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = []
    for text in SQL_LOOKING:
        tag = text.lower().replace(",", "")[:50].strip()
        response = await create(client, title=text, description=text, tags=[tag])
        created.append((text, tag, response))
    patched_text = SQL_LOOKING[0] + " (patched)"
    first_id = created[0][2].json()["id"]
    patch = await client.patch(f"/api/v1/tasks/{first_id}", json={"description": patched_text})

    assert patch.status_code == 200
    for text, tag, response in created:
        task_id = response.json()["id"]
        read = await client.get(
            f"/api/v1/tasks/{task_id}",
            headers={"X-Min-Position": patch.headers["x-event-position"]},
        )
        assert read.status_code == 200
        assert read.json()["title"] == text
        assert read.json()["description"] == (patched_text if task_id == first_id else text)
        assert read.json()["tags"] == [tag]
        by_tag = await client.get("/api/v1/tasks", params={"tags": tag})
        assert [task["id"] for task in by_tag.json()["items"]] == [task_id]
        [stored] = [
            json.loads(row["state"])
            for row in await store_events(settings, uuid.UUID(task_id))
            if row["topic"] == "TaskCreated"
        ]
        assert stored["title"] == text
        assert stored["description"] == text
    listed = await client.get("/api/v1/tasks", params={"limit": 100})
    assert listed.json()["total"] == len(SQL_LOOKING)


async def test_sql_looking_values_in_every_query_parameter_are_refused_or_served(
    client: httpx.AsyncClient,
) -> None:
    task = (await create(client)).json()
    task_parameters = ["version", "as_of", "min_position"]

    for text in SQL_LOOKING:
        for name in PARAMETERS:
            response = await client.get("/api/v1/tasks", params={name: text})
            assert response.status_code in (200, 422), (name, text, response.text)
            if response.status_code == 422:
                assert_error(response, 422, name)
            else:
                assert set(response.json()) == {
                    "items",
                    "total",
                    "limit",
                    "offset",
                    "next_cursor",
                    "next",
                }
        for name in task_parameters:
            response = await client.get(f"/api/v1/tasks/{task['id']}", params={name: text})
            assert_error(response, 422, name)
        history = await client.get(f"/api/v1/tasks/{task['id']}/history", params={text: "1"})
        assert_error(history, 422)
        for method in ("GET", "PATCH", "DELETE"):
            response = await client.request(method, f"/api/v1/tasks/{text}", headers=JSON)
            assert response.status_code in (404, 422), (method, text, response.text)

    after = await client.get(f"/api/v1/tasks/{task['id']}")
    assert after.json() == task


# --- NUL bytes and invalid UTF-8 ----------------------------------------------------------------

BAD_BODIES = {
    b'{"title": "a\\u0000b"}': "title",
    b'{"title": "a\x00b"}': "body",
    b'{"title": "\xff\xfe"}': "body",
    b'{"title": "caf\xc3"}': "body",
    b'{"title": "ok", "description": "\\ud800"}': "description",
    b'{"title": "ok", "tags": ["a\\u0000"]}': "tags.0",
    b'\x00{"title": "ok"}': "body",
    b'{"title": "ok"}\x00': "body",
    b"\xef\xbb\xbf\xff": "body",
}


async def test_nul_bytes_and_invalid_utf8_in_json_bodies_are_422_and_append_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = (await create(client)).json()

    for body, key in BAD_BODIES.items():
        created = await client.post("/api/v1/tasks", content=body, headers=JSON)
        assert_error(created, 422, key)
        patched = await client.patch(
            f"/api/v1/tasks/{task['id']}", content=body.replace(b'"title": "ok", ', b""),
            headers=JSON,
        )  # fmt: skip
        assert patched.status_code == 422, (body, patched.text)

    assert len(await store_events(settings)) == 1


async def test_nul_bytes_and_invalid_utf8_in_query_strings_are_refused_or_served(
    client: httpx.AsyncClient,
) -> None:
    task = (await create(client)).json()

    nul = await client.get("/api/v1/tasks?q=a%00b")
    control = await client.get("/api/v1/tasks?tags=a%01b")
    # Percent-encoded bytes that are not UTF-8, an encoded lone surrogate among them.
    invalid = await client.get("/api/v1/tasks?q=a%ff%feb")
    surrogate = await client.get("/api/v1/tasks?tags=%ED%A0%80")
    overlong = await client.get(f"/api/v1/tasks/{task['id']}/history?min_position=%C0%AF")
    invalid_name = await client.get("/api/v1/tasks?%FF=1")
    nul_id = await client.get("/api/v1/tasks/%00")
    nul_as_of = await client.get(f"/api/v1/tasks/{task['id']}?as_of=2026-01-01T00:00:00Z%00")
    nul_name = await client.get("/api/v1/tasks?%00=1")

    assert_error(nul, 422, "q")
    assert_error(control, 422, "tags")
    assert_error(invalid, 422, "q")
    assert_error(surrogate, 422, "tags")
    assert_error(overlong, 422, "min_position")
    assert_error(invalid_name, 422)
    assert_error(nul_id, 404)
    assert_error(nul_as_of, 422, "as_of")
    assert_error(nul_name, 422)


async def test_invalid_utf8_in_request_headers_is_refused_under_its_name_or_ignored(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await create(client)
    task, position = created.json(), created.headers["x-event-position"]
    bad = b"\xff\xfe\x01"

    key = await client.post("/api/v1/tasks", json={"title": "x"}, headers={"Idempotency-Key": bad})
    if_match = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"title": "y"}, headers={"If-Match": bad}
    )
    min_position = await client.get("/api/v1/tasks", headers={"X-Min-Position": bad})
    if_none_match = await client.get(
        f"/api/v1/tasks/{task['id']}", headers={"If-None-Match": bad, "X-Min-Position": position}
    )
    request_id = await client.get("/health", headers={"X-Request-ID": bad})

    assert_error(key, 422, "Idempotency-Key")
    assert_error(if_match, 422, "If-Match")
    assert_error(min_position, 422, "X-Min-Position")
    assert if_none_match.status_code == 200
    assert request_id.status_code == 200
    assert len(request_id.headers["x-request-id"]) == 32  # a fresh one, not the bytes sent
    assert len(await store_events(settings)) == 1


# --- Huge and deeply nested JSON ----------------------------------------------------------------


async def test_json_just_under_the_body_limit_is_validated_and_just_over_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limit = settings.max_body_bytes
    items, size, count = [], 40, 0
    while size < limit - 20:
        items.append(b'"t%d"' % count)
        size += len(items[-1]) + 1
        count += 1
    under = b'{"title": "x", "tags": [' + b",".join(items) + b"]}"
    under += b" " * (limit - len(under))
    over = under + b" "
    description = b'{"title": "x", "description": "' + b"d" * (limit - 36) + b'"}'

    many_tags = await client.post("/api/v1/tasks", content=under, headers=JSON)
    long_description = await client.post("/api/v1/tasks", content=description, headers=JSON)
    too_large = await client.post("/api/v1/tasks", content=over, headers=JSON)

    assert len(under) == limit
    assert len(description) <= limit
    assert_error(many_tags, 422, "tags")
    assert_error(long_description, 422, "description")
    assert_error(too_large, 413)
    assert await store_events(settings) == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "x", "description": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"title": "x", "tags": ' + b"[" * 100_000,
    ],
    ids=["nested-field", "nested-array", "nested-objects", "unclosed"],
)
async def test_json_nested_100000_levels_deep_is_422_for_create_and_patch(
    client: httpx.AsyncClient, settings: Settings, body: bytes
) -> None:
    task = (await create(client)).json()

    created = await client.post("/api/v1/tasks", content=body, headers=JSON)
    patched = await client.patch(f"/api/v1/tasks/{task['id']}", content=body, headers=JSON)

    assert_error(created, 422)
    assert_error(patched, 422)
    assert len(await store_events(settings)) == 1


# --- Long query strings and many filter items ---------------------------------------------------


async def test_a_query_string_over_the_limit_is_414_and_one_at_the_limit_is_parsed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limit = settings.max_query_length
    at_limit = "q=" + "a" * (limit - 2)
    over = at_limit + "a"

    parsed = await client.get(f"/api/v1/tasks?{at_limit}")
    refused = await client.get(f"/api/v1/tasks?{over}", headers={"X-Request-ID": "long-1"})
    refused_write = await client.post(f"/api/v1/tasks?{over}", json={"title": "x"})

    assert_error(parsed, 422, "q")
    assert_error(refused, 414)
    assert refused.headers["x-request-id"] == "long-1"
    assert refused.headers["connection"] == "close"
    assert_error(refused_write, 414)
    assert await store_events(settings) == []


async def test_thousands_of_tags_in_a_filter_are_422_and_beyond_the_query_limit_414(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client, tags=["a"])

    fifty = await client.get(
        "/api/v1/tasks",
        params={"tags": ",".join(["a"] * 50)},
        headers={"X-Min-Position": created.headers["x-event-position"]},
    )
    # Commas sent as they are (httpx would encode them, tripling the length).
    thousands = await client.get("/api/v1/tasks?tags=" + ",".join(["a"] * 2000))
    all_of = await client.get("/api/v1/tasks?tags_all=" + ",".join(["b"] * 4000))
    beyond = await client.get("/api/v1/tasks?tags=" + ",".join(["a"] * 5000))

    assert fifty.status_code == 200
    assert fifty.json()["total"] == 1
    assert_error(thousands, 422, "tags")
    assert_error(all_of, 422, "tags_all")
    assert_error(beyond, 414)


# --- Regressions found by the contract fuzzer ---------------------------------------------------


async def test_a_write_method_on_a_path_without_it_is_405_before_the_media_type_is_checked(
    client: httpx.AsyncClient,
) -> None:
    on_health = await client.post("/health")
    on_list = await client.patch("/api/v1/tasks", content=b"x")
    on_history = await client.delete(f"/api/v1/tasks/{uuid.uuid4()}/history")
    unknown = await client.post("/api/v1/nothing-here")

    assert_error(on_health, 405)
    assert on_health.headers["allow"] == "GET, HEAD"
    assert_error(on_list, 405)
    assert on_list.headers["allow"] == "GET, HEAD, POST"
    assert_error(on_history, 405)
    assert_error(unknown, 404)


async def test_the_asyncapi_document_is_served_with_the_media_type_the_openapi_document_names(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    served = await client.get("/asyncapi.yaml")

    documented = document["paths"]["/asyncapi.yaml"]["get"]["responses"]["200"]["content"]
    assert served.headers["content-type"].split(";")[0] in documented


# --- Over real HTTP: headers, slow and idle clients ---------------------------------------------


@pytest.fixture
def server(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Process]:
    """`cli.py serve` on uvicorn and httptools, with short body-read and keep-alive timeouts."""
    settings = make_settings(body_read_timeout_seconds=2.0, keep_alive_timeout_seconds=1)
    with running(settings, tmp_path, ["cli.py", "serve"], "port", "api") as process:
        yield process


def connect(server: Process) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def request(server: Process, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_response(sock)


def get(path: str, *headers: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(
        header + b"\r\n" for header in headers
    ) + b"\r\n"  # fmt: skip


def assert_error_bytes(answer: tuple[int, dict[str, str], bytes], status: int) -> dict[str, str]:
    code, headers, body = answer
    assert code == status, answer
    assert json.loads(body) == {"error": TITLES[status], "details": json.loads(body)["details"]}
    assert isinstance(json.loads(body)["details"], str)  # what to send instead
    assert "x-request-id" in headers
    return headers


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.mark.slow
def test_headers_over_the_limit_are_431_in_the_error_shape_and_under_it_served(
    server: Process,
) -> None:
    limit = server.settings.max_header_bytes
    under = get("/health", b"X-Pad: " + b"p" * (limit // 2))
    over = get("/health", b"X-Pad: " + b"p" * limit)
    many = get("/health", *(b"X-H%d: v" % i for i in range(limit // 4)))
    # httptools sets no limit of its own: megabytes of header reach the app, which refuses them.
    huge = get("/health", b"X-Pad: " + b"p" * 4_000_000)

    served = request(server, under)

    assert served[0] == 200
    for raw in (over, many, huge):
        headers = assert_error_bytes(request(server, raw), 431)
        assert headers["connection"] == "close"
    assert request(server, get("/health"))[0] == 200


@pytest.mark.slow
def test_what_the_http_server_refuses_before_the_app_sees_it_leaves_the_worker_serving(
    server: Process,
) -> None:
    long_query = get("/api/v1/tasks?q=" + "a" * 20_000)
    # Past 64 KiB of URL, httptools itself refuses the request line (plain-text 400, uvicorn's).
    longer_than_the_parser = get("/api/v1/tasks?q=" + "a" * 70_000)
    nul_in_header = get("/health", b"X-Request-ID: a\x00b")
    raw_invalid_utf8_in_query = b"GET /api/v1/tasks?q=\xff HTTP/1.1\r\nHost: t\r\n\r\n"
    invalid_utf8_in_header = get("/health", b"X-Request-ID: caf\xc3")

    assert_error_bytes(request(server, long_query), 414)
    for raw in (longer_than_the_parser, nul_in_header, raw_invalid_utf8_in_query):
        code, headers, _ = request(server, raw)
        assert code == 400
        assert headers["connection"] == "close"
    assert request(server, invalid_utf8_in_header)[0] == 200
    assert request(server, get("/health"))[0] == 200


@pytest.mark.slow
def test_a_body_that_never_finishes_gets_408_while_other_clients_are_served(
    server: Process,
) -> None:
    start = b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    stalled = connect(server)
    stalled.sendall(start + b'Content-Length: 100\r\n\r\n{"title": "never fini')
    trickle = connect(server)
    trickle.sendall(start + b"Content-Length: 1000\r\n\r\n{")
    stop = threading.Event()

    def drip() -> None:
        # A byte at a time, faster than any per-read timeout: the deadline is for the whole body.
        while not stop.is_set():
            try:
                trickle.sendall(b" ")
            except OSError:
                return
            time.sleep(0.2)

    dripping = threading.Thread(target=drip)
    dripping.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            others = [http.get("/health").status_code for _ in range(5)]
            others.append(http.post("/api/v1/tasks", json={"title": "served"}).status_code)
            others.append(http.get("/api/v1/tasks").status_code)

        stalled_answer = read_response(stalled)
        trickle_answer = read_response(trickle)
    finally:
        stop.set()
        dripping.join()
        stalled.close()
        trickle.close()

    assert others == [200] * 5 + [201, 200]
    for answer in (stalled_answer, trickle_answer):
        headers = assert_error_bytes(answer, 408)
        assert headers["connection"] == "close"
    assert request(server, get("/health"))[0] == 200


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_closed_after_the_setting(server: Process) -> None:
    with connect(server) as sock:
        sock.sendall(get("/health"))
        first = read_response(sock)
        sock.sendall(get("/health"))
        second = read_response(sock)

        closed = closed_by_server(sock)  # waits in recv until the server hangs up

    assert first[0] == second[0] == 200
    assert closed


@pytest.mark.slow
def test_a_client_that_never_finishes_its_headers_does_not_hold_up_others(
    server: Process,
) -> None:
    # The app sees a request only once its headers are complete; this one never is. Bounding
    # it is the gateway's job (nginx client_header_timeout); here the worker must simply go on.
    with connect(server) as hanging:
        hanging.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")

        answers = [request(server, get("/health"))[0] for _ in range(5)]

    assert answers == [200] * 5


@pytest.mark.slow
def test_a_process_reached_directly_answers_503_past_its_connection_limit(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(limit_concurrency=5, keep_alive_timeout_seconds=30)
    with running(settings, tmp_path, ["cli.py", "serve"], "port", "api") as process:
        # Uvicorn counts the connection asking too: the fifth is over the limit of five.
        held = [connect(process) for _ in range(4)]
        try:
            for sock in held:  # four open keep-alive connections, each served once
                sock.sendall(get("/health"))
                assert read_response(sock)[0] == 200
            over = request(process, get("/health"))
        finally:
            for sock in held:
                sock.close()
        after = [request(process, get("/health"))[0] for _ in range(3)]

    assert over[0] == 503
    assert after == [200, 200, 200]
