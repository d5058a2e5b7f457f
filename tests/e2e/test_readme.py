"""The README's first walk-through works as written: its shell commands, run one after the
other by bash against a real `cli.py serve`, create, list, change, read back and follow a task."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from shared.config import Settings
from tests.helpers import ROOT, Process, free_port, settings_env

pytestmark = pytest.mark.slow


def walk_through(url: str, scratch: Path) -> str:
    """The README's walk-through as one script, aimed at `url` and writing into `scratch`."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A first walk-through", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 4, "the walk-through lost its commands"
    script = "\n".join(blocks).replace("localhost:8000", url).replace("/tmp/", f"{scratch}/")  # noqa: S108 - the README's own paths, redirected
    return "set -e\n" + script + "\nwait\n"


async def test_the_readme_walk_through_works_as_written(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    configured = settings.model_copy(update={"port": port})
    server = Process(["cli.py", "serve"], configured, port, tmp_path / "serve.log")
    await asyncio.to_thread(server.start)
    try:
        ran = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", walk_through(f"127.0.0.1:{port}", tmp_path)],
            cwd=ROOT,
            env=settings_env(configured),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        await asyncio.to_thread(server.stop)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = ran.stdout
    task_id = re.search(r'"id":"([0-9a-f-]{36})"', out)
    assert task_id is not None, out
    assert "HTTP/1.1 200" in out  # the PATCH
    listed = [line for line in out.splitlines() if line.startswith('{"items"')]
    assert len(listed) == 2, out
    assert task_id.group(1) in listed[1], "the list right after the PATCH did not show it"
    assert '"type":"TaskUpdated"' in out  # the history
    # The follower writes to the same terminal as curl: its lines may land right after a curl
    # answer's last character, so they are found anywhere in a line.
    followed = re.findall(r"(task\.(?:created|updated|soft_deleted)) task (\S+) version", out)
    assert followed == [("task.created", task_id.group(1)), ("task.updated", task_id.group(1))]
