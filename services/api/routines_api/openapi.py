"""The OpenAPI 3.1 document, generated from the route table (`routes.py`) and the models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from routines_api.models import ErrorOut, WebhookAccepted, document_schema
from routines_api.routes import Operation, QueryParam

ERROR_TEXT = {
    400: "Malformed or schema-invalid input",
    405: "Method not allowed on this path (the Allow header lists the allowed ones)",
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
        description=(
            "Served by the **webhook gateway**, not the API service: send fires to the gateway's "
            "URL (the trigger's `webhookUrl`). The request must prove it holds the trigger's secret "
            "as its `signingMode` requires. The run is committed to Postgres before the answer: "
            "202 for a new run, 200 for a repeated delivery id or `Idempotency-Key`. Any JSON body "
            "becomes the run's payload."
        ),
    )
]

PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "companyId": ({"type": "string", "format": "uuid"}, "Id of the company."),
    "agentId": ({"type": "string", "format": "uuid"}, "Id of the agent."),
    "issueId": ({"type": "string", "format": "uuid"}, "Id of the issue."),
    "routineId": ({"type": "string", "format": "uuid"}, "Id of the routine."),
    "triggerId": ({"type": "string", "format": "uuid"}, "Id of the trigger."),
    "runId": ({"type": "string", "format": "uuid"}, "Id of the run."),
    "tokenId": ({"type": "string", "format": "uuid"}, "Id of the token."),
    "revisionId": ({"type": "string", "format": "uuid"}, "Id of the revision."),
    "publicId": ({"type": "string"}, "The webhook trigger's public id (from its `webhookUrl`)."),
}

API_DESCRIPTION = """Recurring tasks for AI agents: routines with schedule, webhook and api triggers.
Each fire records a run; the run dispatcher applies the routine's concurrency policy and creates an
execution issue for the routine's agent.

**Authentication**: `Authorization: Bearer <token>` — the instance admin token
(`routines bootstrap`), a board operator token, or an agent API key.

**Bodies** are JSON (`Content-Type: application/json`), camelCase; unknown fields are rejected.

**Errors** always have the `ErrorOut` shape: `{"error": "<one sentence>", "details": ...}`; for an
invalid body `details` lists `{field, message}` per problem. 401 means a missing or unknown token,
403 a token without access, 404 also hides other companies' objects, 503 a dependency that is down
(retry).

**Webhook fires** go to the webhook gateway (second server below), not to the API service."""


def _path_params(path: str) -> list[dict[str, Any]]:
    params = []
    for name in re.findall(r"{([A-Za-z]+)}", path):
        schema, description = PATH_PARAMS.get(name, ({"type": "string"}, name))
        params.append(
            {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
        )
    return params


def _example(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """An example value built from the properties' examples (following $refs)."""
    if "$ref" in schema:
        if depth > 4:
            return None
        return _example(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1)
    if "examples" in schema:
        return schema["examples"][0]
    if schema.get("type") == "array":
        return [_example(schema.get("items", {}), components, depth + 1)]
    if "properties" in schema:
        return {name: _example(prop, components, depth + 1) for name, prop in schema["properties"].items()}
    if "anyOf" in schema:
        return _example(schema["anyOf"][0], components, depth + 1)
    return None


def build_openapi(
    operations: Sequence[Operation], title: str, version: str, gateway_url: str = "http://127.0.0.1:8081"
) -> dict[str, Any]:
    """OpenAPI 3.1 from the route table; schemas come from the pydantic models themselves."""
    models: set[type[BaseModel]] = {ErrorOut}
    for op in operations:
        models.update(
            m for m in (op.body, op.response, op.events, *op.extra_statuses.values()) if m is not None
        )
    mode: Literal["validation"] = "validation"
    inputs = [(m, mode) for m in sorted(models, key=lambda m: m.__name__)]
    _, schema = models_json_schema(inputs, ref_template="#/components/schemas/{model}")
    components = schema.get("$defs", {})
    for name, component in components.items():
        document_schema(component, name)

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema, "example": _example(schema, components)}}

    api_server = {"url": "/", "description": "API service (this server)"}
    gateway_server = {"url": gateway_url.rstrip("/"), "description": "webhook gateway (webhook fires only)"}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        if op.response is not None:
            body = {"type": "array", "items": ref(op.response)} if op.response_is_list else ref(op.response)
            responses[str(op.status)] = {"description": op.summary, "content": content(body)}
        elif op.stream is not None:
            stream: dict[str, Any] = {"schema": {"type": "string"}}
            if op.events is not None:  # OpenAPI 3.1 has no schema for a stream's items
                stream["x-event-data"] = ref(op.events)
            responses[str(op.status)] = {"description": op.summary, "content": {op.stream: stream}}
        else:
            responses[str(op.status)] = {"description": op.summary}
        for status, model in op.extra_statuses.items():
            responses[str(status)] = {
                "description": "Repeated delivery or idempotency key: the first run, unchanged",
                "content": content(ref(model)),
            }
        errors = set(op.errors) | ({401} if op.auth else set()) | {503}
        if op.body is not None:
            errors |= {400, 413, 415}
        for status in sorted(errors):
            responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
        parameters = _path_params(op.path)
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "schema": q.schema,
                "description": q.description or QUERY_DOCS.get(q.name, q.name),
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
            "description": op.description,
            "operationId": op.operation_id,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": content(ref(op.body))}
        elif op.server is not None:
            entry["requestBody"] = {
                "required": False,
                "description": "Any JSON value; it becomes the run's payload.",
                "content": {
                    "application/json": {"schema": {"type": "object"}, "example": {"event": "deploy"}}
                },
            }
        entry["security"] = [{"bearer": []}] if op.auth else []
        if op.description:
            entry["description"] = op.description
        if op.server:
            entry["servers"] = [gateway_server]
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    error_example = {
        "error": "invalid request body",
        "details": [{"field": "name", "message": "Field required"}],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": API_DESCRIPTION},
        "servers": [api_server, gateway_server],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                f"Error{status}": {
                    "description": text,
                    "content": {
                        "application/json": {
                            "schema": ref(ErrorOut),
                            "example": {
                                "error": ERROR_EXAMPLES.get(status, text),
                                "details": error_example["details"] if status == 400 else None,
                            },
                        }
                    },
                }
                for status, text in ERROR_TEXT.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Instance admin token, board operator token or agent API key.",
                }
            },
        },
    }


QUERY_DOCS = {
    "status": "Only objects with this status.",
    "assigneeAgentId": "Only objects assigned to this agent.",
    "routineId": "Only execution issues of this routine.",
    "limit": "At most this many items (1-500, default 50).",
}

ERROR_EXAMPLES = {
    400: "invalid request body",
    401: "missing or invalid bearer token",
    403: "no access to this company",
    404: "routine not found",
    405: "method DELETE not allowed on /api/companies",
    409: "routine is archived",
    413: "request body exceeds 1048576 bytes",
    415: "request body must be application/json, got text/plain",
    422: "assigneeAgentId: agent is paused; routines can only be assigned to active agents",
    429: "rate limited",
    503: "database unavailable",
}
