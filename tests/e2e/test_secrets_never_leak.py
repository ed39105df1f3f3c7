"""No secret or token in any log line or database row, across create, rotate and fire."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.bootstrap import create_instance_admin_token
from tests.support import Stack, start_service

pytestmark = pytest.mark.e2e


async def test_secrets_and_tokens_never_reach_logs_or_rows(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    admin = await create_instance_admin_token(stack.database_url, "leak-test")
    env = stack.env(log_level="debug")
    api = start_service("api", env, tmp_path)
    gateway = start_service("webhook-gateway", env, tmp_path)
    dispatcher = start_service("run-dispatcher", env, tmp_path)
    secrets: list[str] = [admin]
    try:
        async with aiohttp.ClientSession(base_url=api.url) as http:

            async def post(path: str, token: str, body: object, status: int) -> dict[str, object]:
                async with http.post(path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == status, await resp.text()
                    return await resp.json()

            company = (await post("/api/companies", admin, {"name": "Leak"}, 201))["id"]
            board = str(
                (await post(f"/api/companies/{company}/board-tokens", admin, {"name": "b"}, 201))["token"]
            )
            agent = await post(f"/api/companies/{company}/agents", board, {"name": "a"}, 201)
            api_key = str(agent["apiKey"])
            project = (await post(f"/api/companies/{company}/projects", board, {"name": "p"}, 201))["id"]
            routine = (
                await post(
                    f"/api/companies/{company}/routines",
                    api_key,
                    {"title": "r", "assigneeAgentId": agent["agent"]["id"], "projectId": project},
                    201,
                )
            )["id"]
            bearer = await post(f"/api/routines/{routine}/triggers", api_key, {"kind": "webhook"}, 201)
            signed = await post(
                f"/api/routines/{routine}/triggers",
                board,
                {"kind": "webhook", "signingMode": "hmac_sha256"},
                201,
            )
            rotated = await post(
                f"/api/routine-triggers/{bearer['id']}/rotate-secret", board, {"graceSec": 60}, 200
            )
            secrets += [board, api_key, str(bearer["secret"]), str(signed["secret"]), str(rotated["secret"])]
            # A failed login with a real-looking token must not be logged either.
            async with http.get("/api/companies", headers={"Authorization": f"Bearer {board}x"}) as resp:
                assert resp.status == 401

        async with aiohttp.ClientSession(base_url=gateway.url) as hooks:
            for secret in (bearer["secret"], rotated["secret"], "wrong-secret-value-123456"):
                async with hooks.post(
                    f"/api/routine-triggers/public/{bearer['publicId']}/fire",
                    headers={"Authorization": f"Bearer {secret}"},
                ) as resp:
                    assert resp.status in (202, 401)
            body = b'{"x": 1}'
            ts = str(int(time.time()))
            signature = hmac.new(
                str(signed["secret"]).encode(), ts.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
            async with hooks.post(
                f"/api/routine-triggers/public/{signed['publicId']}/fire",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Paperclip-Timestamp": ts,
                    "X-Paperclip-Signature": signature,
                },
            ) as resp:
                assert resp.status == 202
        for service in (api, gateway, dispatcher):
            service.stop()
        logs = "".join(s.logs() for s in (api, gateway, dispatcher))
        assert "request" in logs  # the logs are there and were read
        for secret in secrets:
            assert secret not in logs
            assert secret[:-4] not in logs
        rows = ""
        for table in ("api_tokens", "webhook_secrets", "routine_triggers", "routine_runs", "issues"):
            rows += "".join(r[0] for r in await db.fetch(f"SELECT row_to_json(t)::text FROM {table} t"))
        for secret in secrets:
            assert secret not in rows
    finally:
        for service in (api, gateway, dispatcher):
            service.kill()
