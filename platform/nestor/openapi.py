"""OpenAPI 3.1 documents built from the route tree and the declared schemas, and the docs pages.

The root serves the whole tree at `/openapi.json` and `/docs`; every sub-app whose errors
are JSON (its `defaults` say `error_format = "json"`, or `SubApp(openapi=True)`) serves its
own at `<prefix>/openapi.json` and `<prefix>/docs`. Paths carry every prefix, operation ids
are the namespaced route names (with `.post` and the like where one resource has several
methods), path parameters come from the routes with their regex as `pattern`, and every
documented error shares the `Problem` schema. Routes that declare nothing still appear,
with what is known. Documents are stable (sorted, no addresses). In production they follow
`/routes`: paths, methods and ids only, unless the request carries the admin token or the
sub-app marks its API public (`SubApp(public_api=True)`).
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from . import introspect
from .schemas import Operation, Problem, operation_of
from .tree import Level, Tree

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_GROUP = re.compile(r"\(\?P<(\w+)>")
_SKIPPED_METHODS = {"HEAD", "*"}


def _nestor_version() -> str:
    try:
        return version("nestor")
    except PackageNotFoundError:
        return "0"


def document(tree: Tree, level: Level | None = None, *, full: bool = True) -> dict[str, Any]:
    """Return the OpenAPI document of `level` and the levels under it (the whole tree by default)."""
    top = level or tree.root
    routes = [r for r in introspect.routes(tree) if r.method not in _SKIPPED_METHODS and _under(r.level, top)]
    methods: dict[int, int] = {}
    for route in routes:
        methods[id(route.resource)] = methods.get(id(route.resource), 0) + 1
    declared = {id(r): operation_of(_handler(r)) for r in routes}
    refs, components = _components([op for op in declared.values() if op is not None])
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op = declared[id(route)]
        entry = _operation(route, op, refs, methods[id(route.resource)] > 1, full)
        paths.setdefault(route.path, {})[route.method.lower()] = entry
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"Nestor: {top.label}", "version": _nestor_version()},
        "paths": paths,
        "tags": [{"name": lvl.label, "description": lvl.title} for lvl in tree.levels if _under(lvl, top)],
    }
    if full:
        doc["components"] = {"schemas": components}
    return doc


def _under(level: Level, top: Level) -> bool:
    return level.path[: len(top.path)] == top.path


def _handler(route: introspect.Route) -> Any:
    return next(r.handler for r in route.resource if r.method == route.method)


def _components(operations: list[Operation]) -> tuple[dict[type, dict[str, Any]], dict[str, Any]]:
    kinds = [Problem]
    for op in operations:
        kinds += [k for k in (op.body, *op.responses.values()) if k is not None and k not in kinds]
    schemas, components = msgspec.json.schema_components(kinds, ref_template="#/components/schemas/{name}")
    return dict(zip(kinds, schemas)), components


def _operation(route: introspect.Route, op: Operation | None, refs: dict[type, Any], several: bool, full: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"tags": [route.level.label]}
    if route.name:
        entry["operationId"] = f"{route.name}.{route.method.lower()}" if several else route.name
    if not full:
        entry["responses"] = {"default": {"description": "see the full document (admin token)"}}
        return entry
    handler = _handler(route)
    summary, _, description = (getattr(handler, "__doc__", None) or "").strip().partition("\n")
    if summary:
        entry["summary"] = summary.strip()
    if description.strip():
        entry["description"] = " ".join(description.split())
    parameters = _path_parameters(route) + (_query_parameters(op.query) if op and op.query else [])
    if parameters:
        entry["parameters"] = parameters
    if op is not None and op.body is not None:
        entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[op.body]}}}
    entry["responses"] = _responses(op, refs)
    return entry


def _responses(op: Operation | None, refs: dict[type, Any]) -> dict[str, Any]:
    if op is None:
        return {"default": {"description": "not declared: any status, any body"}}
    found: dict[str, Any] = {}
    for status, kind in op.responses.items():
        described: dict[str, Any] = {"description": _phrase(status)}
        if kind is not None:
            described["content"] = {"application/json": {"schema": refs[kind]}}
        found[str(status)] = described
    for status in op.error_statuses():
        found.setdefault(str(status), {"description": _phrase(status), "content": {"application/problem+json": {"schema": PROBLEM_REF}}})
    return found


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


def _path_parameters(route: introspect.Route) -> list[dict[str, Any]]:
    pattern = route.resource.get_info().get("pattern")
    if pattern is None:
        return []
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^{regex}$"}}
        for name, regex in path_patterns(pattern.pattern).items()
    ]


def path_patterns(pattern: str) -> dict[str, str]:
    """Return each `(?P<name>regex)` group of a route's compiled pattern: the regex its `{name:regex}` gave."""
    found, start = {}, 0
    while (group := _GROUP.search(pattern, start)) is not None:
        depth, end = 1, group.end()
        while depth:
            char = pattern[end]
            if char == "\\":
                end += 2
                continue
            depth += {"(": 1, ")": -1}.get(char, 0)
            end += 1
        found[group.group(1)] = pattern[group.end() : end - 1]
        start = end
    return found


def _query_parameters(kind: type) -> list[dict[str, Any]]:
    found = []
    for info in msgspec.structs.fields(kind):
        schema = msgspec.json.schema(info.type)
        schema.pop("$defs", None)
        found.append({"name": info.encode_name, "in": "query", "required": info.required, "schema": schema})
    return found


# -- the docs page -------------------------------------------------------------------------------


def operations(doc: dict[str, Any], origin: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Return the document's operations grouped by sub-app, each ready to show: schemas, an example, curl."""
    schemas = doc.get("components", {}).get("schemas", {})
    groups: dict[str, list[dict[str, Any]]] = {tag["name"]: [] for tag in doc.get("tags", [])}
    for path, methods in sorted(doc["paths"].items()):
        for method, entry in methods.items():
            body = entry.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            example = _example(body, schemas) if body else None
            groups.setdefault(entry["tags"][0], []).append({
                "method": method.upper(),
                "path": path,
                "id": entry.get("operationId", ""),
                "summary": entry.get("summary", ""),
                "description": entry.get("description", ""),
                "parameters": entry.get("parameters", []),
                "body": _resolved(body, schemas) if body else None,
                "example": json.dumps(example, indent=2) if body else None,
                "responses": [(status, r["description"], _schema_name(r)) for status, r in sorted(entry["responses"].items())],
                "curl": _curl(method.upper(), origin + path, example),
            })
    return [(tag, ops) for tag, ops in groups.items() if ops]


def _schema_name(response: dict[str, Any]) -> str:
    for content in response.get("content", {}).values():
        ref = content.get("schema", {}).get("$ref", "")
        return ref.rpartition("/")[2]
    return ""


def _resolved(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    name = schema.get("$ref", "").rpartition("/")[2]
    return json.dumps(schemas.get(name, schema), indent=2, sort_keys=True)


def _example(schema: dict[str, Any] | None, schemas: dict[str, Any], depth: int = 0) -> Any:
    """An example value for a JSON schema: its own `examples`, else the smallest value that fits."""
    if schema is None or depth > 5:
        return None
    if "$ref" in schema:
        return _example(schemas.get(schema["$ref"].rpartition("/")[2]), schemas, depth + 1)
    if schema.get("examples"):
        return schema["examples"][0]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0], schemas, depth + 1)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _example(properties[name], schemas, depth + 1) for name in schema.get("required", properties)}
    if kind == "array":
        return [_example(schema.get("items"), schemas, depth + 1)] * max(schema.get("minItems", 1), 1)
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    return "text" if kind == "string" else None


def _curl(method: str, url: str, example: Any) -> str:
    parts = ["curl"] + ([] if method == "GET" else ["-X", method]) + [f"'{url}'"]
    if example is not None:
        parts += ["-H", "'Content-Type: application/json'", "-d", f"'{json.dumps(example)}'"]
    return " ".join(parts)
