"""Schemathesis over the API's own OpenAPI document, against the API as a real process."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from shared.directory import create_instance_admin_token
from tests.support import Stack, start_service

pytestmark = pytest.mark.e2e

EXAMPLES = 400  # spread over every operation; bounded so the suite stays fast


def _post(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def _seed(base: str, admin: str) -> dict[str, str]:
    """Real ids for the path parameters, so generated requests reach past 404."""
    company = _post(f"{base}/api/companies", admin, {"name": "Schema"})["id"]
    agent = _post(f"{base}/api/companies/{company}/agents", admin, {"name": "a"})["agent"]["id"]
    project = _post(f"{base}/api/companies/{company}/projects", admin, {"name": "p"})["id"]
    routine = _post(
        f"{base}/api/companies/{company}/routines",
        admin,
        {"title": "r", "assigneeAgentId": agent, "projectId": project},
    )["id"]
    trigger = _post(f"{base}/api/routines/{routine}/triggers", admin, {"kind": "webhook"})["id"]
    issue = _post(f"{base}/api/companies/{company}/issues", admin, {"title": "i"})["id"]
    return {
        "companyId": company,
        "agentId": agent,
        "routineId": routine,
        "triggerId": trigger,
        "issueId": issue,
    }


def test_no_5xx_and_every_response_matches_the_document(stack: Stack, tmp_path: Path) -> None:
    admin = asyncio.run(create_instance_admin_token(stack.database_url, "schemathesis"))
    api = start_service("api", stack.env(manual_run_wait_sec=0), tmp_path)
    try:
        with urllib.request.urlopen(api.url + "/api/openapi.json", timeout=10) as resp:
            document = json.loads(resp.read())
        # The fire endpoint is served by the gateway; its own tests cover it.
        del document["paths"]["/api/routine-triggers/public/{publicId}/fire"]
        schema = schemathesis.openapi.from_dict(document)
        ids = _seed(api.url, admin)
        strategy = schema.as_strategy(path_parameters=ids, headers={"Authorization": f"Bearer {admin}"})
        selected = [
            checks.not_a_server_error,
            openapi_checks.status_code_conformance,
            openapi_checks.content_type_conformance,
            openapi_checks.response_schema_conformance,
        ]

        @settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            seen.append((case.operation.method.upper(), case.operation.path))
            case.call_and_validate(base_url=api.url, checks=selected)

        seen: list[tuple[str, str]] = []
        check()
        assert len(seen) >= EXAMPLES // 2
        assert len(set(seen)) == len(schema)  # every operation was exercised
    finally:
        api.kill()
