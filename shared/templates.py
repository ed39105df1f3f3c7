"""Routine variables and issue templates (pure).

A routine declares variables; `{{name}}` placeholders in its title and description must each be
declared. At decision time a run's values come from, in order, the values given for the run
(manual run `variables`), the run payload's top-level keys, then the defaults. Rendering is plain
substitution in one pass (a value is never itself expanded); each value is length-capped, kept on
one line and wrapped in «…» so untrusted payload text reads as quoted data, not as instructions.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import Unprocessable

VARIABLE_TYPES = ("text", "number", "boolean", "select", "date")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
MAX_VARIABLES = 50
MAX_OPTIONS = 100
MAX_VALUE_CHARS = 500
TITLE_MAX = 200
OPEN, CLOSE = "«", "»"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class VariableError(ValueError):
    """A value that does not fit its variable (the message names the variable)."""


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    default: Any = None
    required: bool = False
    options: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Variable:
        return cls(
            data["name"],
            data["type"],
            data.get("default"),
            bool(data.get("required", False)),
            tuple(data.get("options") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        out["default"] = self.default
        if self.type == "select":
            out["options"] = list(self.options)
        return out


def coerce(variable: Variable, value: Any) -> Any:
    """The value as the variable's type, or VariableError saying why not."""
    kind, name = variable.type, variable.name
    if kind == "text":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise VariableError(f"variable {name!r} must be text")
        return str(value)
    if kind == "number":
        if isinstance(value, bool):
            raise VariableError(f"variable {name!r} must be a number")
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise VariableError(f"variable {name!r} must be a number") from None
        if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
            raise VariableError(f"variable {name!r} must be a number")
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise VariableError(f"variable {name!r} must be true or false")
    if kind == "select":
        if not isinstance(value, str) or value not in variable.options:
            raise VariableError(f"variable {name!r} must be one of {', '.join(variable.options)}")
        return value
    if kind == "date":
        if isinstance(value, str) and len(value) == 10:
            try:
                return dt.date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise VariableError(f"variable {name!r} must be a date (YYYY-MM-DD)")
    raise VariableError(f"variable {name!r} has unknown type {kind!r}")


def parse_variables(raw: Sequence[Mapping[str, Any]]) -> list[Variable]:
    """Declarations checked for sense (names, types, options, defaults), or 422 naming the problem."""
    if len(raw) > MAX_VARIABLES:
        raise Unprocessable(f"variables: at most {MAX_VARIABLES}")
    seen: set[str] = set()
    result = []
    for item in raw:
        variable = Variable.from_json(item)
        if not NAME.match(variable.name):
            raise Unprocessable(f"variables: invalid name {variable.name!r} (letters, digits, _; ≤ 64)")
        if variable.name in seen:
            raise Unprocessable(f"variables: {variable.name!r} is declared twice")
        seen.add(variable.name)
        if variable.type == "select":
            if not variable.options or len(variable.options) > MAX_OPTIONS:
                raise Unprocessable(f"variables: select {variable.name!r} needs 1 to {MAX_OPTIONS} options")
            if len(set(variable.options)) != len(variable.options):
                raise Unprocessable(f"variables: select {variable.name!r} has repeated options")
        elif variable.options:
            raise Unprocessable(f"variables: only select variables take options ({variable.name!r})")
        if variable.default is not None:
            try:
                variable = Variable(
                    variable.name,
                    variable.type,
                    coerce(variable, variable.default),
                    variable.required,
                    variable.options,
                )
            except VariableError as exc:
                raise Unprocessable(f"variables: default of {exc}") from None
        result.append(variable)
    return result


def placeholders(*texts: str | None) -> list[str]:
    """Every placeholder name used in the texts, in order of first use."""
    names: list[str] = []
    for text in texts:
        for match in PLACEHOLDER.finditer(text or ""):
            if match.group(1) not in names:
                names.append(match.group(1))
    return names


def check_placeholders(title: str, description: str | None, variables: Sequence[Variable]) -> None:
    """Every `{{name}}` must be declared: 422 naming the first that is not."""
    declared = {v.name for v in variables}
    for name in placeholders(title, description):
        if name not in declared:
            raise Unprocessable(
                f"placeholder {{{{{name}}}}} is not a declared variable", {"placeholder": name}
            )


def required_without_default(variables: Sequence[Variable]) -> list[str]:
    """Required variables a schedule fire could never fill (no payload, no explicit values)."""
    return [v.name for v in variables if v.required and v.default is None]


def resolve(
    variables: Sequence[Variable], given: Mapping[str, Any], payload: Mapping[str, Any]
) -> dict[str, Any]:
    """The values of a run: given, else the payload's top-level key, else the default.
    VariableError names a required variable without a value, or a value of the wrong type."""
    values: dict[str, Any] = {}
    for variable in variables:
        if variable.name in given and given[variable.name] is not None:
            values[variable.name] = coerce(variable, given[variable.name])
        elif variable.name in payload and payload[variable.name] is not None:
            values[variable.name] = coerce(variable, payload[variable.name])
        elif variable.default is not None:
            values[variable.name] = variable.default
        elif variable.required:
            raise VariableError(f"required variable {variable.name!r} has no value")
    return values


def _quoted(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else ("true" if value is True else "false" if value is False else str(value))
    )
    text = _CONTROL.sub(" ", text).replace(OPEN, "‹").replace(CLOSE, "›").strip()
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return f"{OPEN}{text}{CLOSE}"


def render(text: str | None, values: Mapping[str, Any]) -> str | None:
    """Substitute each declared placeholder once (values are never expanded themselves); a
    placeholder without a value (optional, no default) becomes empty."""
    if text is None:
        return None

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return _quoted(values[name]) if name in values else ""

    return PLACEHOLDER.sub(substitute, text)


def render_title(title: str, values: Mapping[str, Any]) -> str:
    """The rendered title, cut to the issue title limit."""
    rendered = render(title, values) or title
    rendered = rendered.strip() or title
    return rendered if len(rendered) <= TITLE_MAX else rendered[: TITLE_MAX - 1] + "…"
