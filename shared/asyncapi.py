"""The AsyncAPI document of the published events, rendered from the settings in force.

`asyncapi.yaml` beside this module holds the messages and the defaults; the served document
names the configured exchange, event log (its retention) and broker host, never credentials.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from shared.config import Settings

TEMPLATE = resources.files("shared").joinpath("asyncapi.yaml")


@cache
def _template() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
    return document


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    document = copy.deepcopy(_template())
    url = urlsplit(settings.amqp_url)
    secure = url.scheme == "amqps"
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    server = document["servers"]["broker"]
    server["host"] = f"{url.hostname or 'localhost'}:{url.port or (5671 if secure else 5672)}"
    server["protocol"] = "amqps" if secure else "amqp"
    events = document["channels"]["taskEvents"]
    events["address"] = settings.exchange
    events["bindings"]["amqp"]["exchange"].update(name=settings.exchange, vhost=vhost)
    log = document["channels"]["eventLog"]
    log["address"] = settings.event_log_stream
    log["bindings"]["amqp"]["queue"].update(name=settings.event_log_stream, vhost=vhost)
    log["description"] += (
        f" Retention: x-max-age {settings.event_log_max_age},"
        f" x-max-length-bytes {settings.event_log_max_bytes}."
    )
    return document


def render(settings: Settings) -> str:
    return yaml.safe_dump(asyncapi_document(settings), sort_keys=False, allow_unicode=True)
