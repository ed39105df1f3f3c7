"""One route table per service, and the OpenAPI 3.1 document generated from it and the models."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from routines_api.models import ErrorOut, WebhookAccepted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ERROR_TEXT = {
    400: "Malformed or schema-invalid input",
    401: "Missing or invalid credentials",
    403: "Forbidden",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Semantically invalid input",
    429: "Rate limited",
    503: "A dependency is unavailable",
}


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler | None
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_is_list: bool = False
    status: int = 200
    extra_statuses: dict[int, type[BaseModel]] = field(default_factory=dict)
    errors: Sequence[int] = ()
    auth: bool = True
    query: Sequence[QueryParam] = ()
    headers: Sequence[QueryParam] = ()
    server: str | None = None
    stream: str | None = None  # media type of a streamed answer (e.g. text/event-stream)
    description: str = ""


class RouteTable:
    """Routes with enough metadata to describe themselves."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self, method: str, path: str, *, summary: str, tag: str, **meta: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, handler, summary, tag, **meta))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for op in self.operations:
            if op.handler is not None:
                app.router.add_route(op.method, op.path, op.handler)


# The gateway's public endpoint, described here so the API's document covers the whole system.
GATEWAY_OPERATIONS = [
    Operation(
        "POST",
        "/api/routine-triggers/public/{publicId}/fire",
        None,
        "Fire a webhook trigger (served by the webhook gateway)",
        "webhooks",
        response=WebhookAccepted,
        status=202,
        extra_statuses={200: WebhookAccepted},
        errors=(400, 401, 404, 409, 413, 415, 429, 503),
        auth=False,
        headers=(
            QueryParam("Authorization", {"type": "string"}, "bearer mode: `Bearer <secret>`"),
            QueryParam("X-Paperclip-Signature", {"type": "string"}, "hmac_sha256 mode"),
            QueryParam("X-Paperclip-Timestamp", {"type": "string"}, "hmac_sha256 mode"),
            QueryParam("X-Hub-Signature-256", {"type": "string"}, "github_hmac mode"),
            QueryParam("X-GitHub-Delivery", {"type": "string"}, "github_hmac delivery id"),
            QueryParam("webhook-id", {"type": "string"}, "standard_webhooks mode"),
            QueryParam("webhook-timestamp", {"type": "string"}, "standard_webhooks mode"),
            QueryParam("webhook-signature", {"type": "string"}, "standard_webhooks mode"),
            QueryParam("Idempotency-Key", {"type": "string", "maxLength": 255}, "makes retries safe"),
        ),
        server="webhook gateway",
    )
]


def _path_params(path: str) -> list[dict[str, Any]]:
    import re

    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([A-Za-z]+)}", path)
    ]


def build_openapi(operations: Sequence[Operation], title: str, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 from the route table; schemas come from the pydantic models themselves."""
    models: set[type[BaseModel]] = {ErrorOut}
    for op in operations:
        models.update(m for m in (op.body, op.response, *op.extra_statuses.values()) if m is not None)
    mode: Literal["validation"] = "validation"
    inputs = [(m, mode) for m in sorted(models, key=lambda m: m.__name__)]
    _, schema = models_json_schema(inputs, ref_template="#/components/schemas/{model}")
    components = schema.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        if op.response is not None:
            body = {"type": "array", "items": ref(op.response)} if op.response_is_list else ref(op.response)
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": body}},
            }
        elif op.stream is not None:
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {op.stream: {"schema": {"type": "string"}}},
            }
        else:
            responses[str(op.status)] = {"description": op.summary}
        for status, model in op.extra_statuses.items():
            responses[str(status)] = {
                "description": "see summary",
                "content": {"application/json": {"schema": ref(model)}},
            }
        errors = set(op.errors) | ({401} if op.auth else set()) | {503}
        if op.body is not None:
            errors |= {400, 413, 415}
        for status in sorted(errors):
            responses[str(status)] = {
                "description": ERROR_TEXT[status],
                "content": {"application/json": {"schema": ref(ErrorOut)}},
            }
        parameters = _path_params(op.path)
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "schema": q.schema,
                "description": q.description,
            }
            for q in op.query
        ]
        parameters += [
            {
                "name": h.name,
                "in": "header",
                "required": False,
                "schema": h.schema,
                "description": h.description,
            }
            for h in op.headers
        ]
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": (op.handler.__name__ if op.handler else "fireWebhookTrigger"),
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body)}},
            }
        elif op.server is not None:
            entry["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        entry["security"] = [{"bearer": []}] if op.auth else []
        if op.description:
            entry["description"] = op.description
        if op.server:
            entry["description"] = f"Served by the {op.server}, not the API service."
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Routines API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2em}h2{margin-top:2rem;border-bottom:1px solid #ddd}
.op{margin:.6rem 0}.m{display:inline-block;width:4.5rem;font-weight:bold}</style></head>
<body><h1>Routines API</h1><p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a>
(OpenAPI 3.1). Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.</p>
<div id="ops">Loading…</div>
<script>
fetch('/api/openapi.json').then(r => r.json()).then(doc => {
  const byTag = {};
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops))
      (byTag[op.tags[0]] = byTag[op.tags[0]] || []).push([method, path, op]);
  const out = document.getElementById('ops'); out.textContent = '';
  for (const [tag, ops] of Object.entries(byTag)) {
    const h = document.createElement('h2'); h.textContent = tag; out.appendChild(h);
    for (const [method, path, op] of ops) {
      const d = document.createElement('div'); d.className = 'op';
      const codes = Object.keys(op.responses).join(' ');
      d.innerHTML = '<span class="m"></span><code></code> — <span></span> <small></small>';
      d.children[0].textContent = method.toUpperCase(); d.children[1].textContent = path;
      d.children[2].textContent = op.summary; d.children[3].textContent = '(' + codes + ')';
      out.appendChild(d);
    }
  }
});
</script></body></html>
"""


ROUTES = RouteTable()
