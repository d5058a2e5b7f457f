"""The API through the gateway: Debian's nginx running deploy/nginx.conf in front of the split
processes, driven over HTTP the way a client sees it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.config import Settings
from shared.openapi import WHOLE_API, merge_documents
from tests.helpers import JSON, ROOT, Process, eventually, free_port, store_events

# Debian puts nginx in /usr/sbin, which an unprivileged user's PATH may lack.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NGINX is None,
        reason="nginx is not installed (.ci/run installs Debian's nginx with apt-get)",
    ),
]

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
UNAVAILABLE = "Service unavailable"


def _servers(ports: int | Sequence[int]) -> str:
    """One upstream `server` line per port (several instances of a service behind one name)."""
    listed = [ports] if isinstance(ports, int) else list(ports)
    return " ".join(f"server 127.0.0.1:{port};" for port in listed)


def render_config(
    port: int, command_port: int | Sequence[int], query_port: int | Sequence[int], workdir: Path
) -> str:
    """deploy/nginx.conf with loopback addresses in place of compose's service names."""
    text = NGINX_CONF.read_text()
    replacements = {
        "listen 8000;": f"listen 127.0.0.1:{port};",
        "server command:8001;": _servers(command_port),
        "server query:8002;": _servers(query_port),
        "/var/run/nginx.pid": str(workdir / "nginx.pid"),
        "/var/cache/nginx": str(workdir / "cache"),
    }
    for compose_value, local_value in replacements.items():
        assert compose_value in text, f"{NGINX_CONF} no longer holds {compose_value!r}"
        text = text.replace(compose_value, local_value)
    return text


@contextlib.contextmanager
def nginx(
    command_port: int | Sequence[int], query_port: int | Sequence[int], log: Path
) -> Iterator[str]:
    """Debian's nginx in the foreground with the rendered configuration, stopped afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gateway-") as work:
        workdir = Path(work)
        # When run as root nginx's workers drop to an unprivileged user that must reach the
        # temp directories (request bodies over the buffer are spooled there).
        workdir.chmod(0o755)
        (workdir / "cache").mkdir()
        config = workdir / "nginx.conf"
        config.write_text(render_config(port, command_port, query_port, workdir))
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                [str(NGINX), "-e", "stderr", "-c", str(config), "-g", "daemon off;"],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_listening(proc, port, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nginx not listening: {log.read_text()[-3000:]}")


@dataclass
class Stack:
    url: str
    command: Process
    query: Process
    access_log: Path

    def access_entries(self) -> list[dict[str, Any]]:
        """The gateway's JSON access log lines (its error lines are skipped)."""
        lines = self.access_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextlib.contextmanager
def gateway_stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """Command service (with relay), query service and projector, and nginx in front."""
    ports = {"command_port": free_port(), "query_port": free_port(), "projector_port": free_port()}
    configured = settings.model_copy(update=ports)
    command = Process(
        ["-m", "command_service"], configured, ports["command_port"], tmp_path / "cmd.log"
    )
    query = Process(
        ["-m", "query_service"], configured, ports["query_port"], tmp_path / "query.log"
    )
    projector = Process(
        ["-m", "projector"], configured, ports["projector_port"], tmp_path / "proj.log"
    )
    processes = [command, query, projector]
    log = tmp_path / "nginx.log"
    try:
        for process in processes:
            process.start()
        with nginx(ports["command_port"], ports["query_port"], log) as url:
            yield Stack(url, command, query, log)
    finally:
        for process in processes:
            process.stop()


async def read_at(http: httpx.AsyncClient, path: str, position: str) -> httpx.Response:
    """A read that reflects the write at `position`; retried while the projection catches up."""
    answers: list[httpx.Response] = []

    async def reached() -> bool:
        answers.append(await http.get(path, headers={"X-Min-Position": position}))
        return answers[-1].status_code != 503

    await eventually(reached, 60)
    return answers[-1]


async def test_a_client_creates_patches_lists_reads_and_deletes_a_task_through_the_gateway(
    settings: Settings, tmp_path: Path
) -> None:
    request_id = f"gateway-{uuid.uuid4().hex}"

    with gateway_stack(settings, tmp_path) as stack:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            created = await http.post(
                "/api/v1/tasks",
                headers={**JSON, "X-Request-ID": request_id},
                json={"title": " Ship it ", "tags": ["Work"]},
            )
            task = created.json()
            path = f"/api/v1/tasks/{task['id']}"
            fetched = await read_at(http, path, created.headers["x-event-position"])
            head = await http.head(path)
            not_modified = await http.get(path, headers={"If-None-Match": '"1"'})
            patched = await http.patch(
                path,
                headers={**JSON, "If-Match": '"1"'},
                json={"priority": 5, "completed": True},
            )
            stale = await http.patch(path, headers={**JSON, "If-Match": '"1"'}, json={})
            listed = await read_at(
                http, "/api/v1/tasks?priority=5", patched.headers["x-event-position"]
            )
            deleted = await http.delete(path, headers={"If-Match": '"2"'})
            gone = await read_at(http, path, deleted.headers["x-event-position"])
            emptied = await read_at(http, "/api/v1/tasks", deleted.headers["x-event-position"])
            history = await http.get(f"{path}/history")

    assert created.status_code == 201
    assert created.headers["location"] == path
    assert created.headers["etag"] == '"1"'
    assert created.headers["x-request-id"] == request_id
    assert task["title"] == "Ship it"
    assert task["tags"] == ["work"]
    assert fetched.status_code == 200
    assert fetched.json() == task
    assert fetched.headers["etag"] == '"1"'
    assert head.status_code == 200
    assert head.headers["etag"] == '"1"'
    assert head.content == b""
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == '"1"'

    assert patched.status_code == 200
    assert patched.headers["etag"] == '"2"'
    assert patched.json()["priority"] == 5
    assert patched.json()["completed"] is True
    assert stale.status_code == 412
    assert stale.json()["error"] == "Precondition failed"
    assert listed.status_code == 200
    assert listed.json()["total"] == 1
    assert listed.json()["items"] == [patched.json()]

    assert deleted.status_code == 204
    assert deleted.headers["etag"] == '"3"'
    assert deleted.content == b""
    assert gone.status_code == 404
    assert gone.json()["error"] == "Not found"
    assert gone.json()["details"].startswith("No task ")
    assert emptied.json()["total"] == 0
    assert history.status_code == 200
    events = history.json()["events"]
    assert [event["type"] for event in events] == ["TaskCreated", "TaskUpdated", "TaskSoftDeleted"]
    assert events[0]["correlation_id"] == request_id
    stored = await store_events(settings, uuid.UUID(task["id"]))
    assert [row["topic"] for row in stored] == ["TaskCreated", "TaskUpdated", "TaskSoftDeleted"]


async def test_a_body_over_the_limit_gets_413_in_the_error_shape_from_the_app_or_the_gateway(
    settings: Settings, tmp_path: Path
) -> None:
    over_app_limit = b'{"title": "' + b"x" * 1_500_000 + b'"}'
    over_gateway_limit = b'{"title": "' + b"x" * 3_000_000 + b'"}'
    ids = {"app": f"app-{uuid.uuid4().hex}", "gateway": f"gateway-{uuid.uuid4().hex}"}

    with gateway_stack(settings, tmp_path) as stack:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            by_app = await http.post(
                "/api/v1/tasks",
                headers={**JSON, "X-Request-ID": ids["app"]},
                content=over_app_limit,
            )
            by_gateway = await http.post(
                "/api/v1/tasks",
                headers={**JSON, "X-Request-ID": ids["gateway"]},
                content=over_gateway_limit,
            )
    # Read once nginx has stopped gracefully, so every finished request has its line.
    entries = {entry["request_id"]: entry for entry in stack.access_entries()}

    for answer in (by_app, by_gateway):
        assert answer.status_code == 413
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"] == "Payload too large"
        assert "limited to" in answer.json()["details"]
    # The 1.5 MB body reached the app (nginx's limit is above the app's); 3 MB did not.
    assert entries[ids["app"]]["upstream_status"] == "413"
    assert entries[ids["gateway"]]["upstream_status"] == ""
    assert await store_events(settings) == []


async def test_reads_get_the_error_shape_while_the_query_service_is_down_and_writes_go_on(
    settings: Settings, tmp_path: Path
) -> None:
    with gateway_stack(settings, tmp_path) as stack:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            stack.query.stop()
            listed = await http.get("/api/v1/tasks")
            health = await http.get("/health")
            created = await http.post("/api/v1/tasks", headers=JSON, json={"title": "still"})
            stack.query.start()
            recovered = await read_at(
                http, f"/api/v1/tasks/{created.json()['id']}", created.headers["x-event-position"]
            )

    for answer in (listed, health):
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.headers["retry-after"] == "1"
        body = answer.json()
        assert set(body) == {"error", "details"}
        assert body["error"] == UNAVAILABLE
        assert isinstance(body["details"], str)
    assert created.status_code == 201
    assert recovered.status_code == 200
    assert recovered.json() == created.json()


async def test_documents_go_to_the_command_service_and_health_to_the_query_service_by_path(
    settings: Settings, tmp_path: Path
) -> None:
    with gateway_stack(settings, tmp_path) as stack:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            document = await http.get("/openapi.json")
            docs = await http.get("/docs")
            health = await http.get("/health")
            ready = await http.get("/ready")
            metrics = await http.get("/metrics")
            own_document = await http.get(f"{stack.command.url}/openapi.json")
            query_document = await http.get(f"{stack.query.url}/openapi.json")
            query_ready = await http.get(f"{stack.query.url}/ready")
    entries = stack.access_entries()

    assert document.status_code == 200
    whole = document.json()
    assert whole == merge_documents(
        whole["info"]["title"], own_document.json(), query_document.json()
    )
    assert whole == json.loads(WHOLE_API.read_text())
    assert "patch" in whole["paths"]["/api/v1/tasks/{task_id}"]
    assert "get" in whole["paths"]["/api/v1/tasks/{task_id}"]
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == query_ready.status_code == 200
    assert ready.json()["checks"] == query_ready.json()["checks"]
    upstreams = {entry["uri"]: entry["upstream"] for entry in entries}
    command_address = f"127.0.0.1:{stack.command.port}"
    query_address = f"127.0.0.1:{stack.query.port}"
    assert upstreams["/openapi.json"] == upstreams["/docs"] == command_address
    assert upstreams["/health"] == upstreams["/ready"] == query_address
    assert metrics.status_code == 404
    assert metrics.json() == {"error": "Not found", "details": "No resource at /metrics"}


async def _slow_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST announcing a body under the app's limit, of which only the first byte is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def _status_line(reader: asyncio.StreamReader, timeout: float) -> int | None:
    with contextlib.suppress(TimeoutError, OSError, ValueError, IndexError):
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1])
    return None


async def test_a_thousand_slow_bodies_from_one_client_leave_another_client_served(
    settings: Settings, tmp_path: Path
) -> None:
    connections = 1000
    configured = settings.model_copy(update={"body_read_timeout_seconds": 3.0})
    with gateway_stack(configured, tmp_path) as stack:
        port = int(stack.url.rsplit(":", 1)[1])
        slow = [await _slow_body(port) for _ in range(connections)]
        # Another client (another loopback address) while all of those are open.
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=other, base_url=stack.url, timeout=30) as http:
            started = time.monotonic()
            health = await http.get("/health")
            created = await http.post("/api/v1/tasks", headers=JSON, json={"title": "served"})
            served_in = time.monotonic() - started

        async def trickle() -> None:
            # A byte a second on every connection: nginx's gap timeout never fires.
            while True:
                await asyncio.sleep(1)
                for _, writer in slow:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write(b" ")

        trickling = asyncio.create_task(trickle())
        try:
            statuses = await asyncio.gather(*(_status_line(reader, 30) for reader, _ in slow))
        finally:
            trickling.cancel()
            for _, writer in slow:
                writer.close()

    assert health.status_code == 200
    assert created.status_code == 201
    assert served_in < 10
    # Past the per-client limit the gateway answered at once; the requests it let through were
    # ended by the app's whole-body timeout although a byte kept arriving every second.
    counts = {status: statuses.count(status) for status in set(statuses)}
    assert set(counts) == {503, 408}, counts
    assert counts[503] >= connections // 2
    assert len(await store_events(settings)) == 1  # the other client's task, and no other
