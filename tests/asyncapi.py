"""Validate a wire event against the AsyncAPI document kept in the repository."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jsonschema
import yaml

DOCUMENT: dict[str, Any] = yaml.safe_load(
    resources.files("shared").joinpath("asyncapi.yaml").read_text()
)
MESSAGES = {
    message["name"]: message["payload"]["$ref"].rsplit("/", 1)[-1]
    for message in DOCUMENT["components"]["messages"].values()
}


def validate_event(envelope: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError when the event does not match its message schema."""
    schema_name = MESSAGES[envelope["type"]]
    schema = {
        "$ref": f"#/components/schemas/{schema_name}",
        "components": DOCUMENT["components"],
    }
    jsonschema.validate(envelope, schema, format_checker=jsonschema.FormatChecker())
