"""The OpenAPI document describes everything (a lint), and /api/docs is a full interactive viewer
served from files vendored into the package (no CDN), under a CSP that lets it run."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.integration.api_client import Client


@pytest.fixture
async def doc(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    document: dict[str, Any] = await resp.json()
    return document


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def test_every_schema_and_field_has_a_description_and_an_example(doc: dict[str, Any]) -> None:
    missing = []
    for name, schema in doc["components"]["schemas"].items():
        if not schema.get("description"):
            missing.append(f"{name}: no description")
        for prop_name, prop in schema.get("properties", {}).items():
            where = f"{name}.{prop_name}"
            if not prop.get("description"):
                missing.append(f"{where}: no description")
            if "$ref" not in prop and not prop.get("examples"):
                missing.append(f"{where}: no example")
            if "title" in prop:
                missing.append(f"{where}: auto title {prop['title']!r}")
    assert missing == []
    assert sum(len(s.get("properties", {})) for s in doc["components"]["schemas"].values()) > 150


def test_examples_are_valid_against_their_schemas(doc: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    root = {"components": doc["components"]}
    for method, path, op in _operations(doc):
        bodies = [op.get("requestBody", {}).get("content", {})]
        bodies += [r.get("content", {}) for r in op["responses"].values()]
        for content in bodies:
            media = content.get("application/json")
            if media is None:
                continue
            schema = {**media["schema"], "components": root["components"]}
            errors = list(Draft202012Validator(schema).iter_errors(media["example"]))
            assert errors == [], (method, path, errors[0].message if errors else None)


def test_every_operation_is_described_with_one_operation_id_convention(doc: dict[str, Any]) -> None:
    ids = []
    for method, path, op in _operations(doc):
        assert op["summary"] and op["description"], (method, path)
        assert op["description"] != op["summary"], (method, path)
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", op["operationId"]), op["operationId"]
        ids.append(op["operationId"])
        responses = [
            doc["components"]["responses"][r["$ref"].rsplit("/", 1)[-1]] if "$ref" in r else r
            for r in op["responses"].values()
        ]
        media = [
            r["content"]["application/json"] for r in responses if "application/json" in r.get("content", {})
        ]
        body = op.get("requestBody", {}).get("content", {})
        media += [body["application/json"]] if "application/json" in body else []
        assert media and all("example" in m for m in media), (method, path, "no example")
        for param in op["parameters"]:
            assert param.get("description"), (method, path, param["name"])
            if param["in"] == "path" and param["name"].endswith("Id") and param["name"] != "publicId":
                assert param["schema"] == {"type": "string", "format": "uuid"}, (path, param)
    assert len(ids) == len(set(ids))
    assert "createRoutine" in ids and "fireWebhookTrigger" in ids


def test_servers_name_the_api_and_the_gateway(doc: dict[str, Any]) -> None:
    servers = {s["url"]: s["description"] for s in doc["servers"]}
    assert servers["/"].startswith("API service")
    assert "webhook gateway" in servers["https://hooks.example.test"]
    fire = doc["paths"]["/api/routine-triggers/public/{publicId}/fire"]["post"]
    assert fire["servers"] == [
        {"url": "https://hooks.example.test", "description": servers["https://hooks.example.test"]}
    ]


def test_errors_are_documented_with_one_schema(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["ErrorOut"]
    assert set(error["properties"]) == {"error", "details"}
    for method, path, op in _operations(doc):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                target = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
                media = target["content"]["application/json"]
                assert media["schema"] == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
                assert media["example"]["error"]


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(doc)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.urls.append(str(values["src"]))
            else:
                self._in_script = True
        if tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


async def test_docs_page_loads_its_vendored_assets_under_its_csp(client: Client) -> None:
    page = await client.get("/api/docs")
    assert page.status == 200
    assert page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "connect-src 'self' https://hooks.example.test" in csp
    parser = _Assets()
    parser.feed(await page.text())
    assert parser.inline_scripts == 0, "inline scripts would be blocked by the CSP"
    assert len(parser.urls) >= 3
    types = {}
    for url in parser.urls:
        assert url.startswith("/api/docs/"), f"{url} is not served by the API itself"
        asset = await client.get(url)
        assert asset.status == 200, url
        types[url.rsplit("/", 1)[-1]] = asset.content_type
        body = await asset.read()
        assert body
        if url.endswith("swagger-ui-bundle.js"):
            assert b"SwaggerUIBundle" in body
    assert types["swagger-ui-bundle.js"] == "application/javascript"
    assert types["swagger-ui.css"] == "text/css"
    init = await (await client.get("/api/docs/routines-docs.js")).text()
    assert '"/api/openapi.json"' in init


async def test_docs_assets_are_a_closed_list(client: Client) -> None:
    for name in ("index.html", "..%2Fapp.py", "NOTICE", "nothing.js"):
        resp = await client.get(f"/api/docs/{name}")
        assert resp.status == 404, name
