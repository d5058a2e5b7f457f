"""One OpenAPI document describes the whole API, and it is the merge of the services' own."""

from __future__ import annotations

import json

from composition import create_app, create_command_app, create_query_app, whole_api_document
from shared.config import Settings
from shared.openapi import WHOLE_API, merge_documents


def test_the_committed_whole_api_document_is_what_the_code_generates() -> None:
    settings = Settings()

    assert json.loads(WHOLE_API.read_text()) == json.loads(whole_api_document(settings)), (
        "run: .venv/bin/python cli.py openapi > shared/openapi.json"
    )


def test_the_single_process_document_is_the_merge_of_the_command_and_query_documents() -> None:
    settings = Settings()
    whole = create_app(settings).openapi()

    merged = merge_documents(
        whole["info"]["title"],
        create_command_app(settings).openapi(),
        create_query_app(settings).openapi(),
    )

    assert whole == merged
    assert set(whole["paths"]["/api/v1/tasks"]) == {"get", "post"}
    assert set(whole["paths"]["/api/v1/tasks/{task_id}"]) == {"get", "patch", "delete"}


def test_every_error_status_in_the_document_uses_the_error_shape() -> None:
    document = create_app(Settings()).openapi()

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    assert "HTTPValidationError" not in json.dumps(document)
