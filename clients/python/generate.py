"""Regenerate the client's models and operations from the API's OpenAPI document.

    python clients/python/generate.py          # rewrite routines_client/models.py, operations.py
    python clients/python/generate.py --check  # exit 1 if they differ from the document

Models come from datamodel-code-generator; each operation becomes one async method on
`AsyncRoutinesClient` and one blocking method on `RoutinesClient`, named after its operationId.
"""

from __future__ import annotations

import argparse
import ast
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


def _return_type(op: dict[str, Any]) -> tuple[str, str | None, bool]:
    """(annotation, model name, whether a list) of the operation's success answer."""
    for status, response in sorted(op["responses"].items()):
        if not status.startswith("2"):
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return "None", None, False
        if schema.get("type") == "array" and (name := _ref_name(schema.get("items", {}))):
            return f"list[models.{name}]", name, True
        if name := _ref_name(schema):
            return f"models.{name}", name, False
        return "Any", None, False
    return "None", None, False


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


def _signature(op: dict[str, Any]) -> str:
    """The method's parameters."""
    params = op.get("parameters", [])
    args = [f"{snake(p['name'])}: str | UUID" for p in params if p["in"] == "path"]
    kw: list[str] = []
    request_body = op.get("requestBody")
    if request_body is not None:
        model = _ref_name(request_body["content"]["application/json"]["schema"])
        if model:
            args.append(f"body: models.{model} | Mapping[str, Any]")
        else:
            kw.append("body: bytes | Mapping[str, Any] | None = None")
    for q in (p for p in params if p["in"] == "query"):
        kw.append(f"{snake(q['name'])}: {_query_type(q['schema'])} = None")
    if any(p["in"] == "header" for p in params):
        kw.append("headers: Mapping[str, str] | None = None")
    return ", ".join(["self", *args, *(["*", *kw] if kw else [])])


def _call_row(path: str, method: str, op: dict[str, Any]) -> str:
    """The operation's row in the `OPERATIONS` table."""
    # Operations served elsewhere than the API name their own `servers` (the webhook gateway).
    served_by = " ".join(str(x.get("description", "")) for x in op.get("servers", []))
    extra = ', server="gateway"' if "gateway" in served_by else ""
    extra += "" if op.get("security") else ", authenticate=False"
    return f'    "{snake(op["operationId"])}": Call("{method.upper()}", "{path}"{extra}),'


def _async_body(name: str, op: dict[str, Any], path: str) -> tuple[str, str]:
    """(return annotation, body line) of the coroutine: one `_call` (or `_page`) over the table row."""
    params = op.get("parameters", [])
    if _is_event_stream(op):
        return (
            "AsyncIterator[dict[str, Any]]",
            f'return follow_events(self._transport, "{path}", last_event_id=last_event_id)',
        )
    arguments = [f'OPERATIONS["{name}"]', *(snake(p["name"]) for p in params if p["in"] == "path")]
    query = ", ".join(f'"{q["name"]}": {snake(q["name"])}' for q in params if q["in"] == "query")
    if query:
        arguments.append(f"params={{{query}}}")
    if op.get("requestBody") is not None:
        arguments.append("body=body")
    if any(p["in"] == "header" for p in params):
        arguments.append("headers=headers")
    call = f"await self._call({', '.join(arguments)})"
    listed = ", ".join(arguments)
    annotation, model, many = _return_type(op)
    if model and many and any(p["name"] == "cursor" for p in params if p["in"] == "query"):
        return f"Page[models.{model}]", f"return await self._page(models.{model}, {listed})"
    if model and many:
        return annotation, f"return many(models.{model}, {call})"
    if model:
        return annotation, f"return models.{model}.model_validate({call})"
    return annotation, call if annotation == "None" else f"return {call}"


def render_operations(doc: dict[str, Any]) -> str:
    rows: list[str] = []
    async_methods: list[str] = []
    sync_methods: list[str] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            name = snake(op["operationId"])
            stream = _is_event_stream(op)
            if stream:
                signature = "self, *, last_event_id: str | None = None"
            else:
                rows.append(_call_row(path, method, op))
                signature = _signature(op)
            annotation, line = _async_body(name, op, path)
            head = f"def {name}({signature})"
            docstring = f'        """{_docstring(op)}"""'
            async_methods.append(f"    {'' if stream else 'async '}{head} -> {annotation}:\n{docstring}")
            async_methods[-1] += f"\n        {line}"
            sync_methods.append(
                f"    {head} -> Iterator[dict[str, Any]]:\n{docstring}\n"
                f"        return self._iterate(self._client.{name}(last_event_id=last_event_id))"
                if stream
                else f"    {name} = blocking(AsyncOperations.{name})"
            )
    return "\n".join(
        [
            '"""Generated by clients/python/generate.py from the OpenAPI document: do not edit."""',
            "from __future__ import annotations",
            "from collections.abc import AsyncIterator, Iterator, Mapping",
            "from datetime import datetime",
            "from typing import Any",
            "from uuid import UUID",
            "from routines_client import models",
            "from routines_client.calls import BlockingCaller, Call, Caller, blocking, many",
            "from routines_client.pages import Page",
            "from routines_client.wakeups import follow_events",
            "OPERATIONS: dict[str, Call] = {",
            *rows,
            "}",
            "class AsyncOperations(Caller):",
            '    """One coroutine per API operation."""',
            "\n\n".join(async_methods),
            "class SyncOperations(BlockingCaller):",
            '    """One blocking method per API operation (wraps the async client)."""',
            "    _client: AsyncOperations",
            "\n".join(sync_methods),
        ]
    )


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


def api_parents() -> dict[str, str]:
    """Each API model that extends another answer model, with the one it extends."""
    openapi_document()  # puts the API package on the path
    from pydantic import BaseModel

    from routines_api import models as api

    return {
        name: cls.__bases__[0].__name__
        for name, cls in vars(api).items()
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == api.__name__
        if getattr(api, cls.__bases__[0].__name__, None) is cls.__bases__[0]
        and cls.__bases__[0].__module__ == api.__name__
    }


def inherit_shared_fields(text: str, parents: dict[str, str]) -> str:
    """The OpenAPI document flattens the API's `TriggerWithSecret(TriggerOut)`: where the API model
    extends another (`parents`) and the generated fields begin with all of the other's, write it
    as a subclass holding only its own fields."""
    lines = text.splitlines()
    module = ast.parse(text)
    first = next(i for i, node in enumerate(module.body) if isinstance(node, ast.ClassDef))
    header = "\n".join(lines[: module.body[first].lineno - 1])

    def source(node: ast.stmt) -> str:
        return "\n".join(lines[node.lineno - 1 : node.end_lineno])

    def fields(node: ast.ClassDef) -> list[str]:
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        return [source(statement) for statement in body]

    classes = {n.name: n for n in module.body[first:] if isinstance(n, ast.ClassDef)}
    plain = {
        name: node for name, node in classes.items() if [ast.unparse(b) for b in node.bases] == ["BaseModel"]
    }
    parent: dict[str, str] = {}
    for name, node in plain.items():
        own = fields(node)
        base = parents.get(name, "")
        inherited = fields(plain[base]) if base in plain else []
        if inherited and own[: len(inherited)] == inherited:
            parent[name] = base

    def render(node: ast.stmt) -> str:
        if not isinstance(node, ast.ClassDef) or node.name not in parent:
            return source(node)
        base = parent[node.name]
        doc = [source(node.body[0])] if ast.get_docstring(node) is not None else []
        rest = fields(node)[len(fields(plain[base])) :]
        return "\n".join([f"class {node.name}({base}):", *doc, *rest])

    done: set[str] = set()
    waiting = list(module.body[first:])
    out: list[str] = []
    while waiting:
        ready = next(
            n for n in waiting if not isinstance(n, ast.ClassDef) or parent.get(n.name, "") in done | {""}
        )
        waiting.remove(ready)
        out.append(render(ready))
        if isinstance(ready, ast.ClassDef):
            done.add(ready.name)
    return header + "\n\n\n" + "\n\n\n".join(out) + "\n"


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
        "models.py": _format(inherit_shared_fields(render_models(doc), api_parents()), "models.py"),
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
