"""The JSON Schema of subscribers.yaml: generated from the models that validate the file, and kept in the repository."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from notifier.cli import main

ROOT = Path(__file__).resolve().parents[1]


def schema_output() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    return out.getvalue()


def test_the_schema_file_in_the_repository_is_what_notifier_schema_prints():
    committed = (ROOT / "subscribers.schema.json").read_text(encoding="utf-8")
    assert committed == schema_output(), "run: notifier schema > subscribers.schema.json"


def test_the_example_config_points_editors_at_the_schema():
    first = (ROOT / "subscribers.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./subscribers.schema.json"


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


def test_subscribers_are_subscriber_models_and_defaults_are_subscriber_fields():
    schema = json.loads(schema_output())
    assert schema["additionalProperties"] is False
    subscriber = resolve(schema, schema["properties"]["subscribers"]["items"])
    assert subscriber["required"] == ["name"] and subscriber["additionalProperties"] is False
    (defaults_ref,) = [option for option in schema["properties"]["defaults"]["anyOf"] if "$ref" in option]
    defaults = resolve(schema, defaults_ref)
    assert "name" not in defaults["properties"] and "rules" in defaults["properties"]
    for fields in (subscriber["properties"], defaults["properties"]):
        assert {"type": "string"} in fields["email"]["anyOf"], "one address may be written as a string"
        assert {"type": "string"} in fields["slack"]["anyOf"]
        assert fields["announce_types"]["items"]["enum"] == ["new", "cross", "replace", "replace-cross"]
        rule = resolve(schema, fields["rules"]["items"])
        assert rule["required"] == ["name"]
        assert rule["anyOf"] == [{"required": ["query"]}, {"required": ["similar"]}], "a query, a ranking, or both"
