"""The agents' skill document only mentions endpoints, parameters, fields and values that the
OpenAPI document has, so it cannot drift from the API."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from routines_api.app import openapi_document
from routines_api.wakeups import WAKEUP_EVENT

SKILL = Path(__file__).resolve().parents[2] / "docs/skills/routines/SKILL.md"
ENDPOINT = re.compile(r"\b(GET|POST|PATCH|PUT|DELETE) (/api/[^\s`?]+)(\?[^\s`]*)?")
BLOCK = re.compile(r"```\n(.*?)```", re.S)


def _schemas(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["components"]["schemas"])


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = _schemas(doc)[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _properties(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    schema = _resolve(doc, schema)
    if schema.get("type") == "array":
        return _properties(doc, schema.get("items", {}))
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []) + schema.get("anyOf", []):
        names |= _properties(doc, part)
    return names


def _operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    template = re.sub(r"{[^}]+}", "{}", path)
    for known, ops in doc["paths"].items():
        if re.sub(r"{[^}]+}", "{}", known) == template and method.lower() in ops:
            return dict(ops[method.lower()])
    raise AssertionError(f"the skill mentions {method} {path}, which the API does not have")


def _all_values(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            found |= _all_values(value)
    elif isinstance(node, list):
        for value in node:
            found |= _all_values(value)
    elif isinstance(node, str):
        found.add(node)
    return found


def _top_level_keys(text: str) -> list[str]:
    """Keys at the outermost level of a JSON-like sketch such as `{"fires": [{"utc": ...}]}`."""
    keys, depth = [], 0
    for match in re.finditer(r'[{}\[\]]|"([A-Za-z]+)"\s*(:)?', text):
        token = match.group(0)
        if token in "{[":
            depth += 1
        elif token in "}]":
            depth -= 1
        elif depth == 1:
            keys.append(match.group(1))
    return keys


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document()


def test_every_endpoint_and_query_parameter_exists(doc: dict[str, Any]) -> None:
    text = SKILL.read_text()
    mentioned = ENDPOINT.findall(text)
    assert len(mentioned) >= 10
    for method, path, query in mentioned:
        op = _operation(doc, method, path)
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        for name in re.findall(r"[?&]([A-Za-z]+)=", query):
            assert name in declared, f"{method} {path}: no query parameter {name}"


def test_every_request_and_answer_field_in_examples_exists(doc: dict[str, Any]) -> None:
    checked = 0
    for block in BLOCK.findall(SKILL.read_text()):
        current: dict[str, Any] | None = None
        for chunk in re.split(r"\n(?=(?:GET|POST|PATCH|PUT|DELETE) /api/)", block):
            head = ENDPOINT.match(chunk.strip())
            if head is None:
                continue
            current = _operation(doc, head.group(1), head.group(2))
            rest = chunk.strip()[head.end() :]
            request, _, answer = rest.partition("→")
            request = request.strip()
            if request.startswith("{"):
                body = current["requestBody"]["content"]["application/json"]["schema"]
                keys = set(json.loads(request))
                assert keys <= _properties(doc, body), (
                    f"{head.group(0)}: unknown {keys - _properties(doc, body)}"
                )
                checked += 1
            for key in _top_level_keys(answer.split("\n")[0]):
                success = next(r for s, r in current["responses"].items() if s.startswith("2"))
                schema = success["content"]["application/json"]["schema"]
                assert key in _properties(doc, schema), f"{head.group(0)} answers no field {key}"
    assert checked >= 5


def test_every_field_name_and_enum_value_in_the_text_exists(doc: dict[str, Any]) -> None:
    known = _all_values(doc) | {WAKEUP_EVENT}
    text = SKILL.read_text()
    for token in set(re.findall(r"`([a-z][A-Za-z_]+)`", text)):
        if token == "routines":  # the command's name
            continue
        assert token in known, f"the skill mentions `{token}`, which the OpenAPI document does not have"


def test_front_matter_names_the_skill() -> None:
    head = SKILL.read_text().split("---")[1]
    assert re.search(r"^name: routines$", head, re.M)
    assert re.search(r"^description: .{40,}", head, re.M)
