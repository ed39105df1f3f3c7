"""Every routine-feature operation is in the OpenAPI document with a description, and its request
and response schemas carry examples."""

from __future__ import annotations

from typing import Any

from tests.integration.api_client import Client
from tests.integration.features_support import api_settings

__all__ = ["api_settings"]

OPERATIONS = [
    ("get", "/api/routines/{routineId}/runs", None, "RunOut"),
    ("get", "/api/runs/{runId}", None, "RunOut"),
    ("post", "/api/runs/{runId}/replay", "ReplayRequest", "RunOut"),
    ("get", "/api/routines/{routineId}/upcoming", None, "UpcomingOut"),
    ("get", "/api/companies/{companyId}/upcoming", None, "UpcomingOut"),
    ("post", "/api/routines/{routineId}/backfill", "BackfillRequest", "BackfillOut"),
    ("get", "/api/routines/{routineId}/health", None, "HealthOut"),
    ("get", "/api/routines/{routineId}/revisions", None, "RevisionOut"),
    ("post", "/api/routines/{routineId}/revisions/{revisionId}/restore", None, "RoutineOut"),
    ("get", "/api/routines/{routineId}/activity", None, "ActivityOut"),
    ("get", "/api/companies/{companyId}/activity", None, "ActivityOut"),
]
WITH_EXAMPLES = {
    "ReplayRequest",
    "UpcomingOut",
    "BackfillRequest",
    "BackfillOut",
    "HealthOut",
    "RevisionOut",
    "ActivityOut",
}


async def test_feature_operations_are_documented_with_examples(client: Client) -> None:
    resp = await client.get("/api/openapi.json")
    doc: dict[str, Any] = await resp.json()
    schemas = doc["components"]["schemas"]
    for method, path, request, response in OPERATIONS:
        op = doc["paths"][path][method]
        assert len(op.get("description", "")) > 40, (method, path)
        assert "Example" in op["description"], (method, path)
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        ref = str(ok["content"]["application/json"]["schema"])
        assert response in ref, (method, path)
        if request is not None:
            assert request in str(op["requestBody"]), (method, path)
    for name in WITH_EXAMPLES:
        assert schemas[name].get("examples"), name
    assert schemas["VariableSpec"].get("examples")
    # The query parameters of the paged history are described.
    params = {p["name"]: p for p in doc["paths"]["/api/routines/{routineId}/runs"]["get"]["parameters"]}
    assert {"limit", "cursor", "status", "source", "triggerId", "from", "to"} <= set(params)
    assert all(params[n]["description"] for n in ("cursor", "status", "from"))
