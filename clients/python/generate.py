"""Regenerate the client's models and operations from the API's OpenAPI document.

    python clients/python/generate.py          # rewrite routines_client/models.py, operations.py
    python clients/python/generate.py --check  # exit 1 if they differ from the document

Models come from datamodel-code-generator; each operation becomes one async method on
`AsyncRoutinesClient` and one blocking method on `RoutinesClient`, named after its operationId.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "routines_client"
REPO = HERE.parent.parent


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, built from its route table (no server needed)."""
    for sub in ("services/api", "."):
        path = str(REPO / sub)
        if path not in sys.path:
            sys.path.insert(0, path)
    from routines_api.app import openapi_document as build

    return build()


def snake(name: str) -> str:
    """A Python identifier for an API name (`triggerId` → `trigger_id`, `from` → `from_`)."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    name = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    return name + "_" if keyword.iskeyword(name) else name


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[1] if isinstance(ref, str) else None


def _return_type(op: dict[str, Any]) -> tuple[str, str]:
    """(annotation, parse expression over `data`) of the operation's success answer."""
    for status, response in sorted(op["responses"].items()):
        if not status.startswith("2"):
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return "None", "None"
        if schema.get("type") == "array" and (name := _ref_name(schema.get("items", {}))):
            return f"list[models.{name}]", f"[models.{name}.model_validate(item) for item in data]"
        if name := _ref_name(schema):
            return f"models.{name}", f"models.{name}.model_validate(data)"
        return "Any", "data"
    return "None", "None"


def _query_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind == "integer":
        return "int | None"
    if kind == "boolean":
        return "bool | None"
    if schema.get("format") == "date-time":
        return "datetime | str | None"
    return "str | None"


def _docstring(op: dict[str, Any]) -> str:
    text = str(op.get("summary") or op.get("description") or op["operationId"]).strip()
    text = text.replace('"""', "'''").replace("\\", "\\\\")
    return text.splitlines()[0].rstrip(".") + "."


def _is_event_stream(op: dict[str, Any]) -> bool:
    return any(
        "text/event-stream" in response.get("content", {})
        for status, response in op["responses"].items()
        if status.startswith("2")
    )


def _render_stream(name: str, op: dict[str, Any], path: str) -> str:
    return "\n".join(
        [
            f"    def {name}(self, *, last_event_id: str | None = None) -> AsyncIterator[dict[str, Any]]:",
            f'        """{_docstring(op)}"""',
            f'        return follow_events(self._transport, "{path}", last_event_id=last_event_id)',
        ]
    )


def render_operations(doc: dict[str, Any]) -> str:
    async_methods: list[str] = []
    sync_methods: list[str] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            name = snake(op["operationId"])
            params = op.get("parameters", [])
            path_params = [p for p in params if p["in"] == "path"]
            query_params = [p for p in params if p["in"] == "query"]
            has_headers = any(p["in"] == "header" for p in params)
            # Operations served elsewhere than the API name their own `servers` (the webhook gateway).
            served_by = " ".join(str(x.get("description", "")) for x in op.get("servers", []))
            server = "gateway" if "gateway" in served_by else "api"
            args = [f"{snake(p['name'])}: str | UUID" for p in path_params]
            call_args = [snake(p["name"]) for p in path_params]
            body_line = "body=None"
            request_body = op.get("requestBody")
            kw: list[str] = []
            if request_body is not None:
                schema = request_body["content"]["application/json"]["schema"]
                model = _ref_name(schema)
                if model:
                    args.append(f"body: models.{model} | Mapping[str, Any]")
                    body_line = "body=_dump(body)"
                else:
                    kw.append("body: bytes | Mapping[str, Any] | None = None")
                    body_line = (
                        "body=None if isinstance(body, bytes) else body, "
                        "raw_body=body if isinstance(body, bytes) else None"
                    )
                call_args.append("body" if model else "body=body")
            for q in query_params:
                kw.append(f"{snake(q['name'])}: {_query_type(q['schema'])} = None")
                call_args.append(f"{snake(q['name'])}={snake(q['name'])}")
            if has_headers:
                kw.append("headers: Mapping[str, str] | None = None")
                call_args.append("headers=headers")
            signature = ", ".join(["self", *args, *(["*", *kw] if kw else [])])
            if _is_event_stream(op):
                async_methods.append(_render_stream(name, op, path))
                sync_methods.append(
                    "\n".join(
                        [
                            f"    def {name}(self, *, last_event_id: str | None = None)"
                            " -> Iterator[dict[str, Any]]:",
                            f'        """{_docstring(op)}"""',
                            f"        events = self._client.{name}(last_event_id=last_event_id)",
                            "        while True:",
                            "            try:",
                            "                yield self._run(events.__anext__())",
                            "            except StopAsyncIteration:",
                            "                return",
                        ]
                    )
                )
                continue
            annotation, parse = _return_type(op)
            if any(q["name"] == "cursor" for q in query_params) and annotation.startswith("list["):
                annotation = "Page[" + annotation.removeprefix("list[")
                parse = f"Page({parse}, next_cursor=headers_in.get(NEXT_CURSOR_HEADER))"
            url = re.sub(r"{([A-Za-z]+)}", lambda m: "{" + snake(m.group(1)) + "}", path)
            url_expr = f'f"{url}"' if "{" in url else f'"{url}"'
            query = ", ".join(f'"{q["name"]}": {snake(q["name"])}' for q in query_params)
            lines = [
                f"    async def {name}({signature}) -> {annotation}:",
                f'        """{_docstring(op)}"""',
                f"        {'_status, data' if annotation != 'None' else '_status, _data'}"
                f"{', headers_in' if 'headers_in' in parse else ', _headers'} = "
                "await self._transport.request(",
                f'            "{method.upper()}",',
                f"            {url_expr},",
                f"            params={{{query}}}," if query else "",
                f"            {body_line},",
                "            headers=headers," if has_headers else "",
                f'            server="{server}",' if server != "api" else "",
                f"            authenticate={bool(op.get('security'))},",
                "        )",
                f"        return {parse}" if annotation != "None" else "",
            ]
            async_methods.append("\n".join(line for line in lines if line))
            sync_methods.append(
                "\n".join(
                    [
                        f"    def {name}({signature}) -> {annotation}:",
                        f'        """{_docstring(op)}"""',
                        f"        return self._run(self._client.{name}({', '.join(call_args)}))",
                    ]
                )
            )
    header = '''"""Generated by clients/python/generate.py from the OpenAPI document: do not edit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

from routines_client import models
from routines_client.pages import NEXT_CURSOR_HEADER, Page
from routines_client.transport import Transport
from routines_client.wakeups import follow_events

T = TypeVar("T")


def _dump(body: BaseModel | Mapping[str, Any]) -> Any:
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dict(body)


class AsyncOperations:
    """One coroutine per API operation."""

    _transport: Transport

'''
    sync_header = '''

class SyncOperations:
    """One blocking method per API operation (wraps the async client)."""

    _client: AsyncOperations

    def _run(self, awaitable: Awaitable[T]) -> T:
        raise NotImplementedError

'''
    return header + "\n\n".join(async_methods) + sync_header + "\n\n".join(sync_methods) + "\n"


def render_models(doc: dict[str, Any]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "openapi.json", Path(tmp) / "models.py"
        source.write_text(json.dumps(doc))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "datamodel_code_generator",
                "--input",
                str(source),
                "--input-file-type",
                "openapi",
                "--output",
                str(target),
                "--output-model-type",
                "pydantic_v2.BaseModel",
                "--use-annotated",
                "--field-constraints",
                "--use-standard-collections",
                "--use-union-operator",
                "--target-python-version",
                "3.11",
                "--disable-timestamp",
                "--use-schema-description",
                "--use-field-description",
                "--snake-case-field",
                "--allow-population-by-field-name",
                "--enum-field-as-literal",
                "all",
                "--collapse-root-models",
                "--use-double-quotes",
                "--formatters",
                "ruff-format",
                "--custom-file-header",
                '"""Generated by clients/python/generate.py from the OpenAPI document: do not edit."""',
            ],
            check=True,
            capture_output=True,
        )
        return target.read_text()


def _format(text: str, name: str) -> str:
    """The house format: ruff's fixes (imports) and ruff format, with the repo's configuration."""
    filename = str(PACKAGE / name)
    for command in (["check", "--fix-only", "--exit-zero", "--quiet"], ["format"]):
        text = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", filename, "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout
    return str(text)


def generated_files() -> dict[str, str]:
    doc = openapi_document()
    return {
        "models.py": _format(render_models(doc), "models.py"),
        "operations.py": _format(render_operations(doc), "operations.py"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args()
    stale = []
    for name, text in generated_files().items():
        path = PACKAGE / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python clients/python/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
