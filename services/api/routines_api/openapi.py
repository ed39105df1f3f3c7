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

OPERATION_DOCS: dict[str, str] = {
    "createCompany": "Creates a company. Only the instance admin (`routines bootstrap` prints its token).",
    "listCompanies": "The instance admin sees every company; board operators and agents see their own.",
    "createAgent": "Creates an agent in the company (board operators). Its API key is in this answer only.",
    "listAgents": "Every agent of the company, oldest first. Any member of the company may read.",
    "updateAgent": "Pauses, re-activates or terminates an agent (board operators).",
    "agentMe": "The agent the calling API key belongs to (agent keys only).",
    "createProject": "Creates a project in the company (board operators).",
    "listProjects": "Every project of the company. Any member of the company may read.",
    "createGoal": "Creates a goal in the company (board operators).",
    "listGoals": "Every goal of the company. Any member of the company may read.",
    "createBoardToken": "Mints a board operator token for the company. The token is in this answer only.",
    "createIssue": "Creates a plain (non-routine) issue (board operators).",
    "listIssues": "Issues of the company, newest first, filtered by assignee, status or routine.",
    "getIssue": "One issue; routine executions carry the routine, run and payload they came from.",
    "updateIssue": "Changes an issue's status. Closing an execution issue settles its origin run in the "
    "same transaction.",
    "createTrigger": "Adds a schedule, webhook or api trigger to a routine. A webhook trigger's secret "
    "is in this answer only; its `webhookUrl` points at the webhook gateway.",
    "updateTrigger": "Changes a trigger; a new cron expression or time zone recomputes `nextRunAt`.",
    "deleteTrigger": "Deletes a trigger. Its runs stay in the routine's history.",
    "rotateSecret": "Issues a new webhook secret; the old one stays valid for `graceSec` seconds.",
    "createRoutine": "Creates a routine assigned to an active agent of the company. Agents may only "
    "create routines assigned to themselves.",
    "listRoutines": "Routines of the company, filtered by status or assignee. 404 if the company does "
    "not exist.",
    "getRoutine": "A routine with its triggers (never their secrets).",
    "updateRoutine": "Changes a routine. active <-> paused; archived is terminal. Agents manage only "
    "routines assigned to themselves.",
    "listRuns": "The routine's runs, newest first: what fired, when, and what was decided.",
    "manualRun": "Records a run now and waits up to `MANUAL_RUN_WAIT_SEC` for the dispatcher's decision: "
    "`status` is then `issue_created`, `coalesced` or `skipped` (else still `received`). A repeated "
    "`idempotencyKey` answers 200 with the first run.",
    "rotateAgentKey": "Issues a new API key for the agent (board operators). The old key stops working "
    "at once; the new key is in this answer only.",
    "listBoardTokens": "The company's board tokens (never the tokens themselves), revoked ones included.",
    "revokeBoardToken": "Revokes a board token for good; requests with it answer 401 from now on.",
    "listInstanceTokens": "Every instance admin token (never the tokens themselves). Instance admin only.",
    "revokeInstanceToken": "Revokes an instance admin token for good (the last unrevoked one cannot be).",
    "backfill": "Lists the slots of a schedule trigger in a past window and which have runs; with "
    "`dryRun` false it records runs for the missing slots (at most `maxRuns`), through the policy.",
    "routineHealth": "Per schedule trigger: expected slots against recorded runs (on time, late, "
    "backfilled, skipped, unaccounted), fire-lag percentiles, outcomes, the failure streak and "
    "the open issue.",
    "getRun": "One run with its payload, variables and decision.",
    "replayRun": "Records a new run (source `replay`) with the original's payload and variables, "
    "optionally overriding variables, assignee or project; it goes through the concurrency policy.",
    "listRevisions": "Every recorded state of the routine: number, actor, snapshot and the changes.",
    "restoreRevision": "Sets the routine's fields back to a revision's (its status stays); recorded as a "
    "new revision.",
    "routineActivity": "What happened to the routine, newest first: changes, triggers, manual runs, "
    "alerts and recorded runs.",
    "companyActivity": "The activity of every routine of the company, newest first.",
    "routineUpcoming": "The next fires of the routine's schedule triggers, with what each would do now.",
    "companyUpcoming": "Every fire of the company's active routines in a window of at most 31 days.",
    "agentWakeups": "Server-Sent Events: one event per wake-up of the calling agent (agent keys only).",
    "cronPreview": "The next fire times of a cron expression in a time zone, with the DST rules the "
    "scheduler uses. Nothing is stored.",
}

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
        models.update(m for m in (op.body, op.response, *op.extra_statuses.values()) if m is not None)
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
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {op.stream: {"schema": {"type": "string"}}},
            }
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
            "description": op.description or OPERATION_DOCS.get(op.operation_id, ""),
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
