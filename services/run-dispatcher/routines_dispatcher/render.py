"""The execution issue's content for one run (pure): variables resolved, title and description
rendered, or the reason the run cannot go ahead."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.templates import Variable, VariableError, render, render_title, resolve

Row = Mapping[str, Any] | asyncpg.Record


@dataclass(frozen=True)
class IssueContent:
    """What the execution issue says, and the values it was rendered with (None: no variables)."""

    title: str
    description: str | None
    values: dict[str, Any] | None


def issue_content(routine: Row, run: Row) -> IssueContent:
    """Render the routine's title and description for the run; VariableError names what is missing."""
    declared = [Variable.from_json(v) for v in routine["variables"] or []]
    if not declared:
        return IssueContent(routine["title"], routine["description"], None)
    payload = run["payload"] if isinstance(run["payload"], Mapping) else {}
    values = resolve(declared, run["input_variables"] or {}, payload)
    return IssueContent(
        render_title(routine["title"], values), render(routine["description"], values), values
    )


__all__ = ["IssueContent", "VariableError", "issue_content"]
