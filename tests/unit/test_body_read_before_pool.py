"""No API handler reads a request body while it holds a pooled database connection (a slow
sender would hold the connection for as long as it likes): checked over the source of every
module, so a new handler cannot reintroduce it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "services" / "api" / "routines_api"
BODY_READS = {"parse_body", "read_json", "read", "post", "json", "text", "multipart"}


def _body_reads_inside_async_with(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.AsyncWith):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                func = sub.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in BODY_READS and "request" in ast.unparse(sub):
                    found.append(f"line {sub.lineno}: {ast.unparse(sub)}")
    return found


@pytest.mark.parametrize("module", sorted(API.rglob("*.py")), ids=lambda p: str(p.relative_to(API)))
def test_no_handler_reads_the_body_while_holding_a_connection(module: Path) -> None:
    assert _body_reads_inside_async_with(module.read_text()) == []


def test_the_check_finds_a_body_read_inside_a_transaction() -> None:
    """The defect as it was in update_agent."""
    source = (
        "async def update_agent(request):\n"
        "    async with request.app[DB_KEY].transaction() as conn:\n"
        "        body = await parse_body(request, AgentUpdate)\n"
    )
    assert _body_reads_inside_async_with(source) == ["line 3: parse_body(request, AgentUpdate)"]
