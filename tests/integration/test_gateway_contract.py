"""One wire contract: what the gateway answers (built in the gateway, documented in the API's
OpenAPI document) validates against that document, for acceptance, a retry and each refusal."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator

from routines_api.app import openapi_document
from tests.integration.api_client import Client
from tests.integration.test_gateway import gateway, make_hook  # noqa: F401 - fixtures

FIRE = "/api/routine-triggers/public/{publicId}/fire"


def _validator(status: int) -> OAS31Validator:
    document = openapi_document()
    response = document["paths"][FIRE]["post"]["responses"][str(status)]
    if "$ref" in response:  # shared error answers live under components/responses
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    return OAS31Validator({**schema, "components": document["components"]})


def _check(status: int, body: Any) -> None:
    errors = sorted(_validator(status).iter_errors(body), key=str)
    assert not errors, [e.message for e in errors]


async def test_accepted_and_retried_answers_match_the_document(
    api: Client,
    gateway: Client,  # noqa: F811
    admin_token: str,
) -> None:
    hook = await make_hook(api, admin_token, "github_hmac")
    body = b'{"event": "push"}'
    first = await gateway.post(hook.path, data=body, headers=hook.headers(body, msg_id="d-1"))
    assert first.status == 202
    _check(202, await first.json())
    again = await gateway.post(hook.path, data=body, headers=hook.headers(body, msg_id="d-1"))
    assert again.status == 200
    answer = await again.json()
    _check(200, answer)
    assert answer["duplicate"] is True


@pytest.mark.parametrize("status", [400, 401, 404, 413, 415])
async def test_refusals_match_the_documented_error_shape(
    api: Client,
    gateway: Client,  # noqa: F811
    admin_token: str,
    status: int,
) -> None:
    hook = await make_hook(api, admin_token, "bearer")
    ok = hook.headers(b"{}")
    request: dict[int, tuple[str, bytes, dict[str, str]]] = {
        400: (hook.path, b"[1, 2]", ok),
        401: (hook.path, b"{}", {**ok, "Authorization": "Bearer wrong"}),
        404: (FIRE.format(publicId="0" * 24), b"{}", ok),
        413: (hook.path, b'{"k": "' + b"x" * 4096 + b'"}', ok),
        415: (hook.path, b"<xml/>", {**ok, "Content-Type": "application/xml"}),
    }
    path, body, headers = request[status]
    resp = await gateway.post(path, data=body, headers=headers)
    assert resp.status == status
    _check(status, await resp.json())
