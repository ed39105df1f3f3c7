"""The board console in a real Chromium (Playwright): sign-in, routines, the cron editor,
webhooks with one-time secrets, live runs, pause/resume, rotation, CSRF, sign-out, and an
accessibility scan of every page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from routines_client import AsyncRoutinesClient, encode_body, sign
from tests.clients.tenant import Tenant, create_tenant
from tests.support import Stack, start_service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "docs" / "console"


def ensure_chromium() -> str:
    """Debian's Chromium, installed on a fresh machine the first time (CI starts with none)."""
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.fail("chromium is missing and cannot be installed here (need root and apt-get)")
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True)
    return CHROMIUM


@dataclass
class Console(Tenant):
    """The company, as its board operator signs in to the console."""

    board_token: str


@pytest.fixture
async def console(stack: Stack, tmp_path: Path) -> AsyncIterator[Console]:
    gateway = start_service("webhook-gateway", stack.env(), tmp_path)
    env = stack.env(public_gateway_url=gateway.url, manual_run_wait_sec=1)
    api = start_service("api", env, tmp_path)
    dispatcher = start_service("run-dispatcher", env, tmp_path)
    try:
        tenant = await create_tenant(
            stack.database_url, api, gateway, company="Acme", agent="Ada", project="Operations"
        )
        async with AsyncRoutinesClient(api.url, tenant.admin) as client:
            board = await client.create_board_token(tenant.company_id, {"name": "operator"})
        yield Console(**vars(tenant), board_token=board.token)
    finally:
        for process in (api, gateway, dispatcher):
            process.kill()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    executable = ensure_chromium()
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def sign_in(context: Any, console: Console, token: str | None = None) -> Any:
    page = await context.new_page()
    await page.goto(console.api.url + "/console/login")
    await page.get_by_label("Token").fill(token or console.board_token)
    await page.get_by_role("button", name="Sign in").click()
    return page


async def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    target = SCREENSHOTS if os.environ.get("ROUTINES_UPDATE_SCREENSHOTS") else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(target / f"{name}.png"), full_page=True)


async def api_json(console: Console, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, console.api.url + path, json=body, headers={"Authorization": f"Bearer {console.admin}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def fire_webhook(console: Console, public_id: str, secret: str, payload: dict[str, Any]) -> str:
    """Fire a webhook trigger as its sender would (HMAC-signed with `secret`): it must be accepted
    (202). Returns the id of the run it made."""
    body = encode_body(payload)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{console.gateway.url}/api/routine-triggers/public/{public_id}/fire",
            data=body,
            headers=sign("hmac_sha256", secret, body),
        ) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["runId"])


async def test_sign_in_refuses_agent_keys_and_wrong_tokens(console: Console, browser: Any) -> None:
    context = await browser.new_context()
    page = await sign_in(context, console, console.agent_key)
    await page.get_by_role("alert").filter(has_text="Agent keys cannot sign in").wait_for()
    page = await sign_in(context, console, "rt_board_" + "x" * 40)
    await page.get_by_role("alert").filter(has_text="not valid").wait_for()
    assert not [c for c in await context.cookies() if c["name"] == "routines_console"]
    await context.close()


async def test_operator_creates_a_routine_with_a_previewed_schedule_and_a_webhook(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await sign_in(context, console)
    await page.get_by_role("heading", name="Routines").wait_for()
    cookie = next(c for c in await context.cookies() if c["name"] == "routines_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # Create with the cron editor: the preview must equal the API's own preview.
    await page.get_by_role("link", name="New routine").click()
    await page.get_by_label("Title").fill("Morning briefing")
    await page.get_by_label("Preset").select_option("weekdays")
    await page.get_by_label("At", exact=True).fill("09:30")
    await page.get_by_label("Time zone").fill("Europe/Amsterdam")
    await page.get_by_label("Time zone").dispatch_event("input")
    table = page.get_by_role("table", name="Next fires")
    await table.locator("tbody tr").first.wait_for()
    assert await page.get_by_label("Cron expression").input_value() == "30 9 * * 1-5"
    shown = [
        [await cell.inner_text() for cell in await row.locator("td").all()][:2]
        for row in await table.locator("tbody tr").all()
    ]
    status, expected = await api_json(
        console,
        "POST",
        "/api/cron/preview",
        {"cronExpression": "30 9 * * 1-5", "timezone": "Europe/Amsterdam", "count": 8},
    )
    assert status == 200
    assert shown == [[f["local"], f["utc"]] for f in expected["fires"]]
    await screenshot(page, "new-routine", tmp_path)
    await page.get_by_role("button", name="Create routine").click()
    await page.wait_for_url(re.compile(r".*/console/routines/[0-9a-f-]{36}$"))
    routine_id = page.url.rsplit("/", 1)[1]
    status, routine = await api_json(console, "GET", f"/api/routines/{routine_id}")
    assert routine["title"] == "Morning briefing"
    assert [(t["kind"], t["cronExpression"], t["timezone"]) for t in routine["triggers"]] == [
        ("schedule", "30 9 * * 1-5", "Europe/Amsterdam")
    ]

    # A webhook: its secret is shown once, and is gone after a reload.
    await page.get_by_role("tab", name="Triggers").click()
    await page.locator("#t-kind").select_option("webhook")
    await page.get_by_role("button", name="Add trigger").click()
    banner = page.locator("#secret-banner")
    await banner.get_by_text("shown once").wait_for()
    secret = (await banner.locator("code.secret").inner_text()).strip()
    assert len(secret) >= 32
    await screenshot(page, "routine-triggers", tmp_path)
    await page.reload()
    await page.get_by_role("heading", name="Morning briefing").wait_for()
    assert secret not in await page.content()
    _, routine = await api_json(console, "GET", f"/api/routines/{routine_id}")
    hook = next(t for t in routine["triggers"] if t["kind"] == "webhook")

    # Fire it as the sender would: the run and its issue appear without a reload.
    await page.get_by_role("tab", name="Runs").click()
    run_id = await fire_webhook(console, hook["publicId"], secret, {"event": "deploy"})
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    await row.get_by_text("issue_created").wait_for(timeout=15_000)
    await row.locator("code.issue-id").wait_for()
    await screenshot(page, "routine-runs", tmp_path)

    # Pause and resume from the page.
    await page.get_by_role("button", name="Pause").click()
    await page.get_by_role("button", name="Resume").wait_for()
    assert (await api_json(console, "GET", f"/api/routines/{routine_id}"))[1]["status"] == "paused"
    await page.get_by_role("button", name="Resume").click()
    await page.get_by_role("button", name="Pause").wait_for()
    assert (await api_json(console, "GET", f"/api/routines/{routine_id}"))[1]["status"] == "active"

    # Rotate with a grace period: the new secret shows once; the old one still verifies.
    await page.get_by_role("tab", name="Triggers").click()
    card = page.locator(f'article[data-trigger-id="{hook["id"]}"]')
    await card.get_by_label("Grace period in seconds").fill("600")
    await card.get_by_role("button", name="Rotate secret").click()
    await banner.get_by_text("Secret rotated").wait_for()
    new_secret = (await banner.locator("code.secret").inner_text()).strip()
    assert new_secret != secret
    for key in (secret, new_secret):
        await fire_webhook(console, hook["publicId"], key, {"key": key[:4]})

    # Health and history of the routine, from the schedule-health and revisions features.
    await page.get_by_role("tab", name="Health").click()
    health = page.get_by_role("table", name="Schedule health")
    await health.get_by_text("30 9 * * 1-5").wait_for()
    await page.get_by_role("tab", name="History").click()
    await page.locator("#revisions").get_by_text("current").wait_for()
    await page.locator("#revisions").get_by_role("button", name=re.compile(r"Restore #\d+")).first.wait_for()
    await page.locator("#activity").get_by_text("secret_rotated").wait_for()
    await screenshot(page, "routine-history", tmp_path)

    # The list shows it with its next fire; the calendar shows its fires.
    await page.get_by_role("link", name="Routines", exact=True).click()
    await page.get_by_role("link", name="Morning briefing").wait_for()
    await screenshot(page, "routines", tmp_path)
    await page.get_by_role("link", name="Calendar").click()
    await page.locator(".calendar a", has_text="Morning briefing").first.wait_for()
    await screenshot(page, "calendar", tmp_path)
    await context.close()


async def test_state_changes_without_the_csrf_token_are_refused(console: Console, browser: Any) -> None:
    context = await browser.new_context()
    page = await sign_in(context, console)
    await page.get_by_role("heading", name="Routines").wait_for()
    _, routine = await api_json(
        console,
        "POST",
        f"/api/companies/{console.company_id}/routines",
        {"title": "CSRF target", "assigneeAgentId": console.agent_id, "projectId": console.project_id},
    )
    request = context.request  # carries the session cookie, like a forged cross-site request would
    refused = await request.patch(
        f"{console.api.url}/api/routines/{routine['id']}", data={"status": "paused"}
    )
    assert refused.status == 403
    assert "CSRF" in (await refused.json())["error"]
    form_post = await request.post(f"{console.api.url}/console/logout", form={"csrf": "wrong"})
    assert form_post.status == 403
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    allowed = await request.patch(
        f"{console.api.url}/api/routines/{routine['id']}",
        data={"status": "paused"},
        headers={"X-CSRF-Token": token},
    )
    assert allowed.status == 200
    _, after = await api_json(console, "GET", f"/api/routines/{routine['id']}")
    assert after["status"] == "paused"
    await context.close()


async def test_sign_out_kills_the_session(console: Console, browser: Any) -> None:
    context = await browser.new_context()
    page = await sign_in(context, console)
    await page.get_by_role("heading", name="Routines").wait_for()
    cookie = next(c for c in await context.cookies() if c["name"] == "routines_console")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/login")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{console.api.url}/api/companies/{console.company_id}/routines",
            headers={"Cookie": f"routines_console={cookie['value']}"},
        ) as resp,
    ):
        assert resp.status == 401
    await page.goto(console.api.url + "/console/")
    assert page.url.endswith("/console/login")
    await context.close()


async def _tab_to(page: Any, selector: str, presses: int = 30) -> None:
    """Press Tab until `selector` has the keyboard focus (as a keyboard-only operator would)."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement?.matches({json.dumps(selector)}) ?? false"):
            return
    raise AssertionError(f"{selector} cannot be reached with the Tab key in {presses} presses")


async def test_keyboard_only_sign_in_and_routine_tabs(console: Console, browser: Any) -> None:
    _, routine = await api_json(
        console,
        "POST",
        f"/api/companies/{console.company_id}/routines",
        {"title": "Keyboard", "assigneeAgentId": console.agent_id, "projectId": console.project_id},
    )
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(console.api.url + "/console/login")
    await _tab_to(page, "input")
    await page.keyboard.type(console.board_token)
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Routines").wait_for()
    await page.goto(f"{console.api.url}/console/routines/{routine['id']}")
    await page.get_by_role("heading", name="Keyboard").wait_for()
    await _tab_to(page, "#tab-details")
    # Arrow keys move between tabs (roving focus), wrapping at both ends; the panel follows.
    expected = [("ArrowRight", "triggers"), ("ArrowRight", "runs"), ("ArrowLeft", "triggers")]
    expected += [("ArrowLeft", "details"), ("ArrowLeft", "history")]
    for key, name in expected:
        await page.keyboard.press(key)
        assert await page.evaluate("document.activeElement.id") == f"tab-{name}", key
        assert await page.get_attribute(f"#tab-{name}", "aria-selected") == "true"
        assert await page.is_visible(f"#panel-{name}")
        assert await page.locator('[role="tabpanel"]:visible').count() == 1
    await context.close()


async def test_every_page_passes_an_accessibility_scan(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    _, routine = await api_json(
        console,
        "POST",
        f"/api/companies/{console.company_id}/routines",
        {"title": "Scanned", "assigneeAgentId": console.agent_id, "projectId": console.project_id},
    )
    await api_json(
        console,
        "POST",
        f"/api/routines/{routine['id']}/triggers",
        {"kind": "schedule", "cronExpression": "0 7 * * *", "timezone": "Asia/Tokyo"},
    )
    # axe is injected by the test; the console's own CSP would (rightly) refuse it.
    context = await browser.new_context(bypass_csp=True)
    axe = AXE.read_text()
    pages = {
        "login": "/console/login",
        "routines": "/console/",
        "new": "/console/routines/new",
        "routine": f"/console/routines/{routine['id']}",
        "calendar": "/console/calendar",
    }
    page = await sign_in(context, console)
    await page.get_by_role("heading", name="Routines").wait_for()
    failures: dict[str, Any] = {}
    for name, path in pages.items():
        target = page if name != "login" else await (await browser.new_context(bypass_csp=True)).new_page()
        await target.goto(console.api.url + path)
        await target.wait_for_load_state("networkidle")
        await target.evaluate(axe)
        result = await target.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => ({id: v.id, nodes: v.nodes.map(n => n.target.join(' '))}))"
        )
        if result:
            failures[name] = result
    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    mobile = await sign_in(phone, console)
    await mobile.get_by_role("heading", name="Routines").wait_for()
    await mobile.get_by_role("link", name="Scanned").wait_for()
    await screenshot(mobile, "routines-phone", tmp_path)
    # Responsive down to a phone: no page is wider than the screen (nothing to scroll sideways).
    too_wide: dict[str, int] = {}
    for name, path in pages.items():
        if name == "login":
            continue
        await mobile.goto(console.api.url + path)
        await mobile.wait_for_load_state("networkidle")
        width = await mobile.evaluate("document.documentElement.scrollWidth")
        if width > 390:
            too_wide[name] = width
    await context.close()
    await phone.close()
    assert not failures, json.dumps(failures, indent=1)
    assert not too_wide, f"pages wider than a 390 px phone screen: {too_wide}"


async def test_console_pages_are_served_with_a_strict_policy(console: Console) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(console.api.url + "/console/login") as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
        async with http.get(console.api.url + "/console/static/console.js") as resp:
            assert resp.status == 200 and "max-age" in resp.headers["Cache-Control"]
            etag = resp.headers["ETag"]
        async with http.get(
            console.api.url + "/console/static/console.js", headers={"If-None-Match": etag}
        ) as resp:
            assert resp.status == 304
        async with http.get(console.api.url + "/console/static/..%2Fsessions.py") as resp:
            assert resp.status == 404
        async with http.get(console.api.url + "/console/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/login"
