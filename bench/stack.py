"""The processes under test: the service and the trivial endpoint on free ports, with settings
of their own (fresh database, exchange and queues), peak RSS, and cleanup afterwards."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import httpx

from shared.config import Settings
from shared.database import drop_database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def bench_settings(base_database_url: str, amqp_url: str) -> Settings:
    """A database, an exchange and queues no one else uses, and a free port."""
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        database_url=with_database(base_database_url, f"tasks_bench_{suffix}"),
        amqp_url=amqp_url,
        exchange=f"bench.{suffix}.events",
        projector_queue=f"bench.{suffix}.projector",
        dead_letter_queue=f"bench.{suffix}.projector.dlq",
        port=free_port(),
        log_level="WARNING",
        # Set, so the ceiling statements can decode the cursors the service hands out.
        cursor_secret=secrets.token_urlsafe(32),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the `TASKS_*` environment a process reads (none inherited from ours)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TASKS_")}
    return {**inherited, **settings.as_environment()}


class Server:
    """A child process serving HTTP on `port`, started with the settings' environment."""

    def __init__(self, args: list[str], settings: Settings, port: int, log: Path) -> None:
        self.args = args
        self.settings = settings
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_path: str = "/health", timeout: float = 60.0) -> Server:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=ROOT,
                env=settings_env(self.settings),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{ready_path}", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.args} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def peak_rss_mb(pid: int | str = "self") -> float:
    """The high-water mark of resident memory (VmHWM) of a live process, in MB; with worker
    processes (uvicorn `workers`), the largest of the process and its children."""
    peaks = [_vm_hwm(pid)]
    for task in Path(f"/proc/{pid}/task").iterdir():
        # A thread or child may end between listing and reading: it has nothing left to count.
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(FileNotFoundError):
                    peaks.append(_vm_hwm(child))
    return max(peaks)


def _vm_hwm(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """`--database-url` and `--amqp-url`: the servers a harness run makes its own names on."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TASKS_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL server to use (a fresh database is created on it and dropped)",
    )
    parser.add_argument(
        "--amqp-url", default=os.environ.get("TASKS_BENCH_AMQP_URL", DEFAULT_AMQP_URL)
    )


async def drop_broker_topology(settings: Settings) -> None:
    """Delete the projector's queues, the event log and the exchange named by `settings`."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in (
            settings.projector_queue,
            settings.dead_letter_queue,
            settings.event_log_stream,
        ):
            await channel.queue_delete(queue)
        await channel.exchange_delete(settings.exchange)


async def cleanup(settings: Settings, extra_databases: list[str]) -> None:
    """Drop the databases, the queues and the exchange the run made."""
    for url in [settings.database_url, *extra_databases]:
        await drop_database(url)
    await drop_broker_topology(settings)
