"""The broker's users per role, loaded from the definitions the deployment generates: the relay's
user publishes on the exchange, the projector's consumes and dead-letters but may not publish on
the exchange, and no guest user is defined."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from shared.broker_access import HASHING, definitions, password_hash
from shared.config import Settings
from shared.messaging import declare_topology

RABBITMQCTL = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    assert RABBITMQCTL is not None
    return subprocess.run(
        [RABBITMQCTL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def as_user(amqp_url: str, user: str, password: str) -> str:
    parts = urlsplit(amqp_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_the_definitions_hold_salted_hashes_and_no_guest(settings: Settings) -> None:
    passwords = {"admin": "a" * 32, "relay": "r" * 32, "projector": "p" * 32}

    document = definitions(settings, passwords)
    text = json.dumps(document)

    assert {user["name"] for user in document["users"]} == {
        "tasks-admin",
        "tasks-relay",
        "tasks-projector",
    }
    assert "guest" not in text
    for password in passwords.values():
        assert password not in text
    assert {user["hashing_algorithm"] for user in document["users"]} == {HASHING}
    # The broker accepting these hashes is shown below by logging in with the passwords.
    assert password_hash("same") != password_hash("same")  # a new salt each time


@pytest.fixture
async def broker_users(settings: Settings) -> AsyncIterator[dict[str, str]]:
    """Definitions for this test's exchange loaded into the running broker (admin left out)."""
    if RABBITMQCTL is None or rabbitmqctl("status").returncode != 0:
        pytest.skip("rabbitmqctl cannot reach the local broker (needs its host and root)")
    suffix = uuid.uuid4().hex[:8]
    users = {"relay": f"t-relay-{suffix}", "projector": f"t-projector-{suffix}"}
    passwords = {"admin": uuid.uuid4().hex, **{role: uuid.uuid4().hex for role in users}}
    document = definitions(
        settings, passwords, relay_user=users["relay"], projector_user=users["projector"]
    )
    document["users"] = [user for user in document["users"] if user["name"] in users.values()]
    document["permissions"] = [
        grant for grant in document["permissions"] if grant["user"] in users.values()
    ]
    # Readable by the broker's CLI, which may run as the broker's own user; hashes of throwaway
    # passwords only, removed at once.
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        file.write(json.dumps(document))
        file.flush()
        os.chmod(file.name, 0o644)
        imported = rabbitmqctl("import_definitions", file.name)
    assert imported.returncode == 0, imported.stderr
    try:
        yield {role: as_user(settings.amqp_url, users[role], passwords[role]) for role in users}
    finally:
        for name in users.values():
            rabbitmqctl("delete_user", name)


async def test_only_the_relay_user_publishes_on_the_exchange(
    settings: Settings, broker_users: dict[str, str]
) -> None:
    relay = await aio_pika.connect(broker_users["relay"])
    async with relay:
        channel = await relay.channel(publisher_confirms=True)
        exchange, _ = await declare_topology(channel, settings)
        await exchange.publish(aio_pika.Message(b"from the relay"), routing_key="task.created")

    projector = await aio_pika.connect(broker_users["projector"])
    async with projector:
        channel = await projector.channel(publisher_confirms=True)
        exchange, queue = await declare_topology(channel, settings)
        async with queue.iterator() as messages:
            received = await asyncio.wait_for(anext(aiter(messages)), 10)
            await received.ack()
        # Dead letters go through the default exchange: allowed.
        await channel.default_exchange.publish(
            aio_pika.Message(b"dead letter"), routing_key=settings.dead_letter_queue
        )
        with pytest.raises(ChannelAccessRefused):
            await exchange.publish(aio_pika.Message(b"forged"), routing_key="task.created")

    assert received.body == b"from the relay"
