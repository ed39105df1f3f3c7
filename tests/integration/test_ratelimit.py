"""Rate limits of the webhook gateway and the API: a trigger's own bucket (429 with Retry-After),
failed attempts on a bucket of their own per client address, the per-client limit behind trusted
proxies, and secret rotations per trigger."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient

from tests.integration.api_client import Client
from tests.integration.test_gateway import Hook, gateway_app, make_hook
from tests.integration.test_gateway_hardening import rotate
from tests.support import Stack, served


async def test_rate_limit_is_429_with_retry_after(api: Client, admin_token: str, stack: Stack) -> None:
    hook = await make_hook(api, admin_token, "bearer")
    # A refill rate so slow that no token can come back while the test runs, however slow the machine.
    app = gateway_app(stack, rate_limit_trigger_per_sec=0.001, rate_limit_trigger_burst=2)
    async with TestClient(served(app)) as gateway:
        codes = [(await gateway.post(hook.path, headers=hook.headers(b""))) for _ in range(3)]
        assert [c.status for c in codes] == [202, 202, 429]
        assert int(codes[2].headers["Retry-After"]) >= 1


async def test_a_trigger_out_of_budget_refuses_before_reading_the_body(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """A flood at a busy webhook costs the gateway as little as possible: once the trigger's
    budget is spent, the answer is 429 as soon as the headers are in, without waiting for the body
    (or verifying a signature over it). Here the body never comes: before, this waited out the
    body timeout and answered 408."""
    hook = await make_hook(api, admin_token, "bearer")
    app = gateway_app(
        stack, rate_limit_trigger_per_sec=0.001, rate_limit_trigger_burst=1, body_timeout_sec=30
    )
    async with TestClient(served(app)) as gateway:
        assert (await gateway.post(hook.path, headers=hook.headers(b""))).status == 202
        server = gateway.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            head = [f"POST {hook.path} HTTP/1.1", f"Host: {server.host}"]
            head += [f"{k}: {v}" for k, v in hook.headers(b"").items()] + ["Content-Length: 100"]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())  # and no body
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=5)
        finally:
            writer.close()
    assert status_line.split()[1] == b"429", status_line


async def test_secret_rotation_is_rate_limited_per_trigger(api: Client, admin_token: str) -> None:
    hook = await make_hook(api, admin_token, "bearer")
    other = await make_hook(api, admin_token, "bearer")
    for _ in range(10):
        await rotate(hook)
    limited = await rotate(hook, status=429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rotat" in (await limited.json())["error"]
    await rotate(other)  # another trigger is not affected


async def test_unauthenticated_requests_do_not_drain_the_trigger_rate_limit(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Anyone who knows a webhook URL used to starve its sender: the trigger's bucket was charged
    before verification. Failed attempts now draw on their own bucket, per client address."""
    hook = await make_hook(api, admin_token, "hmac_sha256")
    app = gateway_app(
        stack,
        rate_limit_trigger_per_sec=0.01,
        rate_limit_trigger_burst=3,
        rate_limit_failed_per_sec=0.01,
        rate_limit_failed_burst=5,
        trusted_proxies=["127.0.0.0/8"],
    )
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    sender = {"X-Forwarded-For": "198.51.100.7"}
    async with TestClient(served(app)) as gateway:
        forged = []
        for i in range(20):
            body = json.dumps({"forged": i}).encode()
            headers = {**hook.headers(body, secret="whsec_" + "A" * 44), **attacker}
            forged.append((await gateway.post(hook.path, data=body, headers=headers)).status)
        real = []
        for i in range(4):
            body = json.dumps({"real": i}).encode()
            real.append(
                (await gateway.post(hook.path, data=body, headers={**hook.headers(body), **sender})).status
            )
    assert forged == [401] * 5 + [429] * 15
    assert real == [202, 202, 202, 429]  # the trigger's own limit still holds for its sender


async def test_failures_from_a_shared_address_do_not_refuse_another_tenants_deliveries(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Webhook providers deliver for many tenants from a few addresses. The failed-attempt budget
    was one per address and checked before anything else: a tenant whose own webhook failed (a
    wrong secret, a URL that does not exist) — or anyone sharing a NAT with a sender — got every
    other tenant's deliveries from that address refused 429. Failed signatures now count per
    address *and* trigger, unknown webhook URLs per address, and neither refuses a delivery to
    another trigger."""
    victim = await make_hook(api, admin_token, "hmac_sha256")
    noisy = await make_hook(api, admin_token, "hmac_sha256")  # another tenant's
    app = gateway_app(
        stack, rate_limit_failed_per_sec=0.001, rate_limit_failed_burst=3, trusted_proxies=["127.0.0.0/8"]
    )
    shared = {"X-Forwarded-For": "192.0.2.30"}  # the provider's address, for both tenants
    async with TestClient(served(app)) as gateway:
        sent = iter(range(100))

        async def fire(hook: Hook, secret: str | None = None, path: str | None = None) -> int:
            body = json.dumps({"n": next(sent)}).encode()
            headers = {**hook.headers(body, secret=secret), **shared}
            return (await gateway.post(path or hook.path, data=body, headers=headers)).status

        wrong = [await fire(noisy, secret="whsec_" + "B" * 44) for _ in range(6)]
        unknown = [await fire(noisy, path=f"/api/routine-triggers/public/{i:024x}/fire") for i in range(6)]
        delivered = [await fire(victim) for _ in range(3)]
    assert wrong == [401] * 3 + [429] * 3  # the failing trigger is still limited at that address
    assert unknown == [404] * 3 + [429] * 3  # and so is probing for URLs
    assert delivered == [202] * 3


async def test_client_address_is_not_the_client_controlled_leftmost_forwarded_entry(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Behind a trusted proxy the leftmost X-Forwarded-For entry was the client address, so a
    client rotating it escaped the per-client limit. Now: the rightmost untrusted, valid IP;
    IPv6 clients are grouped by /64; garbage entries are not addresses."""
    hook = await make_hook(api, admin_token, "bearer")
    app = gateway_app(
        stack,
        rate_limit_client_per_sec=0.01,
        rate_limit_client_burst=2,
        trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"],
    )

    async def statuses(forwarded: list[str]) -> list[int]:
        out = []
        for value in forwarded:
            resp = await gateway.post(hook.path, headers={**hook.headers(b""), "X-Forwarded-For": value})
            out.append(resp.status)
        return out

    async with TestClient(served(app)) as gateway:
        rotating = await statuses([f"192.0.2.{i}, 198.51.100.7, 10.1.2.3" for i in range(4)])
        ipv6 = await statuses([f"2001:db8:1:2::{i:x}" for i in range(1, 5)])
        # Garbage where an address belongs: the last trusted hop is the client (10.9.9.9).
        garbage = await statuses([f"evil-{i}, 10.9.9.9" for i in range(3)])
        other = await statuses(["198.51.100.8"])
    assert rotating == [202, 202, 429, 429]
    assert ipv6 == [202, 202, 429, 429]
    assert garbage == [202, 202, 429]
    assert other == [202]
