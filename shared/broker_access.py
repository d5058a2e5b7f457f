"""RabbitMQ users per role, as a definitions file the broker loads at boot.

The relay's user alone may publish on the exchange; the projector's may declare and read its
queues and dead-letter through the default exchange, never publish on the exchange; an admin
user (management, `cli.py migrate`) may do everything. A broker that loads definitions at boot
creates no `guest` user. Passwords come from the environment and are stored only as salted
hashes (RabbitMQ's `rabbit_password_hashing_sha256`).

python -m shared.broker_access PATH   # writes the definitions from the environment:
    TASKS_BROKER_ADMIN_USER (default tasks-admin), TASKS_BROKER_ADMIN_PASSWORD,
    TASKS_BROKER_RELAY_PASSWORD, TASKS_BROKER_PROJECTOR_PASSWORD
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from shared.config import Settings

HASHING = "rabbit_password_hashing_sha256"
RELAY_USER = "tasks-relay"
PROJECTOR_USER = "tasks-projector"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """base64(salt + sha256(salt + password)), with a 4-byte salt, as RabbitMQ computes it."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _only(*names: str) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


def permissions(
    settings: Settings, relay: str = RELAY_USER, projector: str = PROJECTOR_USER
) -> dict[str, dict[str, str]]:
    """configure / write / read patterns per role user, on the settings' exchange and queues."""
    exchange, queue, dlq = settings.exchange, settings.projector_queue, settings.dead_letter_queue
    # Every part declares the whole topology, the event log stream and its binding included.
    log = settings.event_log_stream
    return {
        relay: {
            "configure": _only(exchange, queue, dlq, log),
            # Publishing needs write on the exchange; binding a queue, write on the queue.
            "write": _only(exchange, queue, dlq, log),
            "read": _only(exchange),
        },
        projector: {
            "configure": _only(exchange, queue, dlq, log),
            # Its queues (binding), and the default exchange for dead letters: not the exchange.
            "write": _only(queue, dlq, log, "amq.default"),
            "read": _only(exchange, queue, dlq),
        },
    }


def definitions(
    settings: Settings,
    passwords: dict[str, str],
    admin_user: str = "tasks-admin",
    relay_user: str = RELAY_USER,
    projector_user: str = PROJECTOR_USER,
) -> dict[str, Any]:
    """The definitions: `passwords` maps "admin", "relay" and "projector" to passwords."""
    users = {admin_user: "admin", relay_user: "relay", projector_user: "projector"}
    granted = permissions(settings, relay_user, projector_user)
    return {
        "users": [
            {
                "name": name,
                "password_hash": password_hash(passwords[role]),
                "hashing_algorithm": HASHING,
                "tags": ["administrator"] if role == "admin" else [],
            }
            for name, role in users.items()
        ],
        "vhosts": [{"name": "/"}],
        "permissions": [
            {"user": admin_user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            *({"user": user, "vhost": "/", **rules} for user, rules in granted.items()),
        ],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    names = {
        "admin": "TASKS_BROKER_ADMIN_PASSWORD",
        "relay": "TASKS_BROKER_RELAY_PASSWORD",
        "projector": "TASKS_BROKER_PROJECTOR_PASSWORD",
    }
    missing = [variable for variable in names.values() if not os.environ.get(variable)]
    if missing:
        print(f"error: set {', '.join(missing)}", file=sys.stderr)
        return 2
    passwords = {role: os.environ[variable] for role, variable in names.items()}
    admin = os.environ.get("TASKS_BROKER_ADMIN_USER", "tasks-admin")
    path = Path(argv[0])
    path.write_text(json.dumps(definitions(Settings(), passwords, admin), indent=2))
    path.chmod(0o644)  # read by the broker's own user; it holds salted hashes only
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
