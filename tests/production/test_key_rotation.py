"""Key-ring rotation under load: a new encryption key is rolled out, every webhook secret is
re-encrypted online (`routines reencrypt`) and the old key retired, while webhooks keep firing
at rolling-restarted gateways → not one failed verification."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.bootstrap import create_instance_admin_token
from shared.crypto import SecretBox, new_secret_key
from tests.support import ServiceProcess, Stack, start_service, wait_until

pytestmark = pytest.mark.production

TRIGGERS = 6


async def test_rotate_key_and_reencrypt_while_webhooks_fire(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    old, new = stack.secret_key, new_secret_key()
    admin = await create_instance_admin_token(stack.database_url, "rotation")

    def env(ring: str) -> dict[str, str]:
        return stack.env(secret_key=ring, trigger_cache_ttl_sec=0.2)

    api = start_service("api", env(old), tmp_path)
    gateways: list[ServiceProcess] = [start_service("webhook-gateway", env(old), tmp_path) for _ in range(2)]
    statuses: list[int] = []
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {admin}"}

            async def post(url: str, body: object) -> dict[str, object]:
                async with http.post(url, json=body, headers=headers) as resp:
                    assert resp.status in (200, 201), await resp.text()
                    return dict(await resp.json())

            company = await post(api.url + "/api/companies", {"name": "Keys"})
            agent = await post(f"{api.url}/api/companies/{company['id']}/agents", {"name": "a"})
            project = await post(f"{api.url}/api/companies/{company['id']}/projects", {"name": "p"})
            routine = await post(
                f"{api.url}/api/companies/{company['id']}/routines",
                {"title": "k", "assigneeAgentId": agent["agent"]["id"], "projectId": project["id"]},
            )
            hooks = [
                await post(f"{api.url}/api/routines/{routine['id']}/triggers", {"kind": "webhook"})
                for _ in range(TRIGGERS)
            ]

            async def fire_forever() -> None:
                for n in itertools.count():
                    if stop.is_set():
                        return
                    hook = hooks[n % len(hooks)]
                    gateway = gateways[n % len(gateways)]
                    try:
                        async with http.post(
                            f"{gateway.url}/api/routine-triggers/public/{hook['publicId']}/fire",
                            json={"n": n},
                            headers={"Authorization": f"Bearer {hook['secret']}"},
                        ) as resp:
                            statuses.append(resp.status)
                    except aiohttp.ClientConnectionError:
                        continue  # a gateway being replaced; the next request goes elsewhere
                    await asyncio.sleep(0.005)

            stopping: list[asyncio.Task[int]] = []

            async def roll(ring: str) -> None:
                """Replace the gateways one at a time: start the new one, then stop the old one
                (gracefully, in the background: its in-flight requests finish)."""
                for index in range(len(gateways)):
                    replacement = await asyncio.to_thread(
                        start_service, "webhook-gateway", env(ring), tmp_path
                    )
                    previous, gateways[index] = gateways[index], replacement
                    stopping.append(asyncio.create_task(asyncio.to_thread(previous.stop)))

            async def fired_since(count: int, more: int) -> None:
                await wait_until(lambda: _true(len(statuses) >= count + more), timeout=60)

            firing = [asyncio.create_task(fire_forever()) for _ in range(4)]
            await fired_since(0, 50)
            # 1-2. The new key joins the rings and becomes the encrypting one (gateways only
            # decrypt, so they take both steps at once; the API writes, see docs/operations.md).
            await roll(f"{new},{old}")
            api.stop()
            api = start_service("api", env(f"{new},{old}"), tmp_path)
            hooks.append(await post(f"{api.url}/api/routines/{routine['id']}/triggers", {"kind": "webhook"}))
            # 3. Re-encrypt everything under the new key, online, while the load goes on.
            before = len(statuses)
            reencrypt = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "shared.cli", "reencrypt"],
                env={**os.environ, **stack.env(secret_key=f"{new},{old}")},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert reencrypt.returncode == 0, reencrypt.stderr[-2000:]
            assert '"examined": 7' in reencrypt.stdout + reencrypt.stderr
            assert '"reencrypted": 6' in reencrypt.stdout + reencrypt.stderr
            await fired_since(before, 50)
            # Every secret now decrypts with the new key alone.
            new_only = SecretBox(new)
            for row in await db.fetch("SELECT trigger_id, ciphertext FROM webhook_secrets"):
                assert new_only.is_current(row["ciphertext"])
                new_only.decrypt(row["ciphertext"], str(row["trigger_id"]))
            # 4. The old key is retired.
            await roll(new)
            before = len(statuses)
            await fired_since(before, 50)
            stop.set()
            await asyncio.gather(*firing, *stopping)
    finally:
        stop.set()
        api.kill()
        for gateway in gateways:
            gateway.kill()

    assert len(statuses) > 200
    assert 401 not in statuses
    assert set(statuses) == {202}, {s: statuses.count(s) for s in set(statuses)}
    assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE source = 'webhook'") == len(statuses)


async def _true(value: bool) -> bool:
    return value
