"""OpenAI's own schemas (vendored: tests/fixtures/openai/) as jsonschema validators, for conformance tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).parent / "fixtures" / "openai" / "chat_completions.schemas.json"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema: the schema, or null."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") is True else converted


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator of the spec's schema `name` (its `$ref`s resolved within the vendored set)."""
    schemas = _nullable(json.loads(SCHEMAS.read_text(encoding="utf-8"))["schemas"])
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}})


def violations(name: str, instance: Any) -> list[str]:
    """Where `instance` breaks the spec's schema `name`, one line each; empty when it conforms."""
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message[:200]}"
        for error in validator(name).iter_errors(instance)
    ]
