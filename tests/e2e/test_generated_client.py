"""A Python client generated from the served `/openapi.json` by openapi-python-client drives
create, list, get, patch and delete against a real server, with an API key."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.config import Settings
from tests.helpers import Process, running

KEY = "client-key"


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Process]:
    configured = settings.model_copy(update={"api_keys": [KEY]})
    with running(configured, tmp_path, ["cli.py", "serve"], "port", "api") as process:
        yield process


@pytest.fixture
def generated(server: Process, tmp_path: Path) -> Iterator[Any]:
    """The client package, generated from the document the server serves."""
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{server.url}/openapi.json").content)
    package = "generated_tasks_client"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / package),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith(package)]:
            del sys.modules[name]


# The generated code passes the documented `tasks_position` cookie per request, which httpx
# deprecates; that is the generator's code, not ours.
@pytest.mark.filterwarnings("ignore:Setting per-request cookies:DeprecationWarning")
def test_a_generated_client_creates_lists_reads_updates_and_deletes_a_task(
    server: Process, generated: Any
) -> None:
    api = importlib.import_module(f"{generated.__name__}.api")
    tasks_write = importlib.import_module(f"{api.__name__}.tasks_write")
    tasks_read = importlib.import_module(f"{api.__name__}.tasks_read")
    create_task = importlib.import_module(f"{tasks_write.__name__}.create_task")
    update_task = importlib.import_module(f"{tasks_write.__name__}.update_task")
    delete_task = importlib.import_module(f"{tasks_write.__name__}.delete_task")
    list_tasks = importlib.import_module(f"{tasks_read.__name__}.list_tasks")
    get_task = importlib.import_module(f"{tasks_read.__name__}.get_task")
    models = importlib.import_module(f"{generated.__name__}.models")
    with (
        generated.AuthenticatedClient(base_url=server.url, token=KEY) as client,
        generated.Client(base_url=server.url) as anonymous,
    ):
        walk_through(
            client, anonymous, create_task, update_task, delete_task, list_tasks, get_task, models
        )


def walk_through(
    client: Any,
    anonymous: Any,
    create_task: Any,
    update_task: Any,
    delete_task: Any,
    list_tasks: Any,
    get_task: Any,
    models: Any,
) -> None:

    created = create_task.sync_detailed(
        client=client, body=models.TaskCreate(title="Generated", priority=4, tags=["client"])
    )
    assert created.status_code == 201, created.content
    task = created.parsed
    position = int(created.headers["x-event-position"])

    listed = list_tasks.sync_detailed(client=client, tags="client", x_min_position=position)
    assert listed.status_code == 200, listed.content
    assert [item.id for item in listed.parsed.items] == [task.id]
    assert listed.parsed.total == 1

    read = get_task.sync_detailed(task.id, client=client, x_min_position=position)
    assert read.status_code == 200, read.content
    assert read.parsed.title == "Generated"

    patched = update_task.sync_detailed(
        task.id, client=client, body=models.TaskPatch(priority=5, completed=True), if_match='"1"'
    )
    assert patched.status_code == 200, patched.content
    assert (patched.parsed.priority, patched.parsed.completed, patched.parsed.version) == (
        5,
        True,
        2,
    )

    deleted = delete_task.sync_detailed(task.id, client=client, if_match='"2"')
    assert deleted.status_code == 204
    gone_at = int(deleted.headers["x-event-position"])

    def gone() -> bool:
        answer = get_task.sync_detailed(task.id, client=client, x_min_position=gone_at)
        return bool(answer.status_code == 404)

    assert gone()  # the read waits for the deletion's position itself
    refused = create_task.sync_detailed(client=anonymous, body=models.TaskCreate(title="anonymous"))
    assert refused.status_code == 401
    assert set(refused.parsed.details.to_dict()) == {"Authorization"}
