"""The `nestor` command: serve, routes, config, check."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from . import introspect
from .app import HOST, PORT, SHUTDOWN_TIMEOUT, create_app
from .config import ConfigError, effective
from .db import BASE_DIR
from .middleware import AccessLogger
from .subapp import TREE, Level, Tree


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"nestor: error: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help="config file (default: $NESTOR_CONFIG, else ./nestor.toml)"
    )
    parser = argparse.ArgumentParser(prog="nestor", description="A nested multi-app platform on aiohttp.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--host", help="address to listen on (default: [nestor] host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: [nestor] port)")
    serve.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    serve.set_defaults(run=serve_command)

    routes = sub.add_parser("routes", parents=[common], help="list every route, without serving")
    routes.add_argument("--json", action="store_true", help="print JSON (stable: sorted, no addresses)")
    routes.add_argument("--all", action="store_true", help="also list the HEAD routes aiohttp adds for GET")
    routes.add_argument("--fields", help="comma-separated fields to keep, e.g. method,path,name")
    routes.add_argument("--explain", metavar='"METHOD PATH"', help='explain one request, e.g. "GET /polls/1"')
    routes.set_defaults(run=routes_command)

    config = sub.add_parser("config", parents=[common], help="effective settings per app level, with sources")
    config.add_argument("level", nargs="?", help="one level, e.g. polls.api (default: all)")
    config.add_argument("--json", action="store_true", help="print JSON")
    config.set_defaults(run=config_command)

    check = sub.add_parser("check", parents=[common], help="build the app without serving; report problems")
    check.set_defaults(run=check_command)
    return parser


def _tree(args: argparse.Namespace) -> Tree:
    logging.getLogger("nestor").setLevel(logging.ERROR)  # warnings are printed by `check`
    return create_app(args.config)[TREE]


def serve_command(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.config)
    root = app[TREE].root.app
    web.run_app(
        app,
        host=args.host or root[HOST],
        port=args.port or root[PORT],
        handler_cancellation=True,
        shutdown_timeout=root[SHUTDOWN_TIMEOUT],
        access_log_class=AccessLogger,
    )
    return 0


def routes_command(args: argparse.Namespace) -> int:
    """Print the route table, JSON, or one explanation."""
    tree = _tree(args)
    base = tree.root.app[BASE_DIR]
    if args.explain:
        method, _, path = args.explain.strip().partition(" ")
        if not path.strip().startswith("/"):
            raise ConfigError(f'--explain expects "METHOD /path", got {args.explain!r}')
        explanation = introspect.explain(tree, method, path.strip(), base=base)
        if args.json:
            print(json.dumps(explanation.as_dict(), indent=2))
        else:
            print(_explain_text(explanation))
        return 0 if explanation.status == 200 else 1
    records = [r.as_dict() for r in introspect.routes(tree, include_head=args.all, base=base)]
    if args.fields:
        keep = [f.strip() for f in args.fields.split(",") if f.strip()]
        unknown = [f for f in keep if f not in (records[0] if records else {})]
        if unknown:
            raise ConfigError(f"--fields: unknown field(s) {', '.join(unknown)}")
        records = [{k: r[k] for k in keep} for r in records]
    if args.json:
        print(json.dumps(records, indent=2, sort_keys=False))
    else:
        columns = list(records[0]) if records else []
        columns = [c for c in columns if c not in ("apps", "middlewares")]
        print(_table(columns, [[_cell(r[c]) for c in columns] for r in records]))
    return 0


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _explain_text(e: introspect.Explanation) -> str:
    lines = [f"{e.method} {e.path}: " + {200: "matched", 405: "405 Method Not Allowed"}.get(e.status, "404 Not Found")]
    if e.route:
        lines.append(f"  route:       {e.route.method} {e.route.path}" + (f"  ({e.route.name})" if e.route.name else ""))
        lines.append(f"  handler:     {e.route.handler}  {e.route.source or ''}".rstrip())
        if e.params:
            lines.append("  parameters:  " + ", ".join(f"{k}={v}" for k, v in e.params.items()))
    if e.level is not None:
        lines.append("  apps:        " + " > ".join(f"[{lvl.label}]" for lvl in e.level.chain()))
        lines.append("  middlewares: " + " > ".join(introspect.middleware_chain(e.level)))
    lines += [f"  note:        {note}" for note in e.notes]
    lines.append("  config:")
    lines += [f"    {c.setting.name} = {json.dumps(c.setting.show(c.value))}  ({c.source})" for c in e.config]
    return "\n".join(lines)


def level_values(tree: Tree, level: Level) -> list[dict[str, Any]]:
    """Return every effective value at a level, with its source, secrets redacted."""
    chain = [(lvl.path, lvl.values) for lvl in level.chain()]
    return [e.as_dict() for e in effective(chain, tree.settings.values())]


def config_command(args: argparse.Namespace) -> int:
    """Print each level's effective values and where each came from."""
    tree = _tree(args)
    levels = [tree.find(args.level)] if args.level else tree.levels
    if args.json:
        data = [
            {"level": lvl.label, "prefix": lvl.prefix or "/", "values": level_values(tree, lvl)}
            for lvl in levels
        ]
        print(json.dumps(data, indent=2))
        return 0
    blocks = []
    for level in levels:
        rows = [[v["name"], json.dumps(v["value"]), v["source"]] for v in level_values(tree, level)]
        blocks.append(f"[{level.label}]  {level.prefix or '/'}\n" + _indent(_table(["setting", "value", "source"], rows)))
    print("\n\n".join(blocks))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def check_command(args: argparse.Namespace) -> int:
    """Build the app without serving; print what is mounted and any problem (exit 1 if any)."""
    tree = _tree(args)
    for level in tree.levels:
        depth = len(level.path)
        print(f"{'  ' * depth}[{level.label}] {level.prefix or '/'}")
    if tree.warnings:
        print(f"\n{len(tree.warnings)} problem(s):")
        for warning in tree.warnings:
            print(f"  - {warning}")
        return 1
    print("\nno problems found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
