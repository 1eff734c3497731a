"""What the built-in `nestor` commands do: serve, routes, config, check, new-subapp, new-project.

`nestor.cli` parses the command line and calls these; `configured_commands()` finds the
commands that the configured sub-apps add.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp_jinja2

from . import checks, dbcli, instance, introspect, openapi, scaffold, workers
from . import serve as serving
from .app import HOST, KEEPALIVE_TIMEOUT, PORT, SHUTDOWN_TIMEOUT, as_config, create_app, root_value
from .config import CONFIG_ENV, ConfigError, add_command_line
from .db import BASE_DIR
from .logs import LOG_FORMAT, configure_logging
from .subapp import SUBAPPS, Command, discover, importable, not_mounted
from .tree import TREE, Tree

BUILT_IN = ("serve", "routes", "config", "check", "openapi", "db", "new-subapp", "new-project")


def configured_commands(config_file: str | None = None) -> dict[str, Command]:
    """Return the commands the configured sub-apps add, by name (their modules are imported, no app is built)."""
    config = as_config(config_file)
    importable(config.base_dir)
    found: dict[str, Command] = {}
    stack = discover(root_value(config, SUBAPPS), config.specs)
    while stack:
        spec = stack.pop(0)
        for command in spec.commands:
            if command.name in BUILT_IN or command.name in found:
                raise ConfigError(
                    f"sub-app {spec.name!r} adds the command {command.name!r}, which "
                    f"{'nestor' if command.name in BUILT_IN else 'another sub-app'} already has: rename it"
                )
            found[command.name] = command
        stack.extend(spec.children)
    return found


def _tree(args: argparse.Namespace) -> Tree:
    logging.getLogger("nestor").setLevel(logging.ERROR)  # warnings are printed by `check`
    return create_app(args.config)[TREE]


def serve_command(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (one process, or --workers N)."""
    serving.limit_malloc_arenas()  # before any thread starts
    if args.reload:
        from . import reload  # watchfiles is only needed here

        return reload.run(args)
    if args.log_format:  # before the configuration is read: its mistakes are log lines in that format
        configure_logging(args.log_level, args.log_format)
    config = as_config(args.config)
    given = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    add_command_line(config, given)  # the app sees them too (the monitor checks its own /health)
    log_format = args.log_format or root_value(config, LOG_FORMAT)
    configure_logging(args.log_level, log_format)
    serving.loop_factory(args.loop)  # an unknown or missing loop fails before anything starts
    app = create_app(config)
    root = app[TREE].root.app
    port = root[PORT]
    errors, warnings = serving.worker_problems(
        root, args.workers or 1, port=port, allow_memory_bus=args.allow_memory_bus
    )
    for warning in warnings:
        print(f"nestor: warning: {warning}", file=sys.stderr)
    if errors:
        raise ConfigError("; ".join(errors))
    if not args.overlap:
        instance.claim_address(root[HOST], port)
    if args.pid_file:
        instance.write_pidfile(args.pid_file)
    options = serving.Options(
        config=args.config,
        host=root[HOST],
        port=port,
        shutdown_timeout=root[SHUTDOWN_TIMEOUT],
        keepalive_timeout=root[KEEPALIVE_TIMEOUT],
        workers=args.workers or 1,
        loop=args.loop,
        log_level=args.log_level,
        log_format=log_format,
        command_line=tuple(given.items()),
    )
    if args.workers is None:  # one process; `--workers 1` runs one worker under the supervisor (SIGHUP reloads)
        serving.run(app, options)
        return 0
    del app  # each worker builds its own; this one only checked the configuration
    return workers.supervise(options)


def routes_command(args: argparse.Namespace) -> int:
    """Print the route table or JSON (or one explanation, exit 1 when nothing matches)."""
    tree = _tree(args)
    base = tree.root.app[BASE_DIR]
    if args.explain:
        return _explain(tree, args.explain, base, as_json=args.json)
    records = [r.as_dict() for r in introspect.routes(tree, include_head=args.all, base=base)]
    known = list(records[0]) if records else []
    default = known if args.json else [c for c in known if c not in _LONG_FIELDS]
    columns = _columns(args.fields, known, default)
    if args.json:
        print(json.dumps([{c: r[c] for c in columns} for r in records], indent=2))
    else:
        print(_table(columns, [[_cell(r[c]) for c in columns] for r in records]))
    return 0


_LONG_FIELDS = ("apps", "middlewares")  # left out of the table unless asked for with --fields


def _columns(fields: str | None, known: list[str], default: list[str]) -> list[str]:
    if not fields:
        return default
    wanted = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in known]
    if unknown or not wanted:
        raise ConfigError(
            f"--fields: unknown field(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(known)}"
        )
    return wanted


def _explain(tree: Tree, request: str, base: Path, *, as_json: bool) -> int:
    method, _, path = request.strip().partition(" ")
    if not path.strip().startswith("/"):
        raise ConfigError(f'--explain expects "METHOD /path", e.g. "GET /polls/1"; got {request!r}')
    explanation = introspect.explain(tree, method, path.strip(), base=base)
    if as_json:
        print(json.dumps(explanation.as_dict(), indent=2))
    else:
        print(_explain_text(explanation))
    return 0 if explanation.status == 200 else 1


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " > ".join(map(str, value))
    return "" if value is None else str(value)


def _table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


_OUTCOME = {
    200: "matched",
    301: "301 Moved Permanently",
    308: "308 Permanent Redirect",
    405: "405 Method Not Allowed",
    404: "404 Not Found",
}


def _explain_text(e: introspect.Explanation) -> str:
    lines = [f"{e.method} {e.path}: {_OUTCOME.get(e.status, e.status)}"]
    if e.route:
        name = f"  ({e.route.name})" if e.route.name else ""
        lines.append(f"  route:       {e.route.method} {e.route.path}{name}")
        lines.append(f"  handler:     {e.route.handler}  {e.route.source or ''}".rstrip())
        if e.params:
            lines.append("  parameters:  " + ", ".join(f"{k}={v}" for k, v in e.params.items()))
    if e.level is not None:
        lines.append("  apps:        " + " > ".join(f"[{lvl.label}]" for lvl in e.level.chain()))
        lines.append("  middlewares: " + " > ".join(introspect.middleware_chain(e.level)))
    lines += [f"  note:        {note}" for note in e.notes]
    lines.append("  config:")
    lines += [f"    {v['name']} = {json.dumps(v['value'])}  ({v['source']})" for v in e.config]
    return "\n".join(lines)


def config_command(args: argparse.Namespace) -> int:
    """Print each level's effective values and where each came from, secrets as ***."""
    tree = _tree(args)
    levels = [tree.find(args.level)] if args.level else tree.levels
    shown = [(lvl, lvl.described()) for lvl in levels]  # secrets redacted
    if args.json:
        data = [{"level": lvl.label, "prefix": lvl.prefix or "/", "values": v} for lvl, v in shown]
        print(json.dumps(data, indent=2))
        return 0
    blocks = []
    for level, values in shown:
        rows = [[v["name"], json.dumps(v["value"]), v["source"]] for v in values]
        table = _table(["setting", "value", "source"], rows)
        blocks.append(f"[{level.label}]  {level.prefix or '/'}\n{_indent(table)}")
    print("\n\n".join(blocks))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _command_problems(config_file: str | None) -> list[str]:
    try:
        configured_commands(config_file)
    except ConfigError as e:
        return [str(e)]
    return []


def check_command(args: argparse.Namespace) -> int:
    """Build the app without serving; print what is mounted and any problem (exit 1 if any)."""
    tree = _tree(args)
    errors, warnings = serving.worker_problems(
        tree.root.app, args.workers or 1, allow_memory_bus=args.allow_memory_bus
    )
    for level in tree.levels:
        depth = len(level.path)
        print(f"{'  ' * depth}[{level.label}] {level.prefix or '/'}")
    for warning in warnings:
        print(f"\nwarning: {warning}")
    env = tree.root.app[aiohttp_jinja2.APP_KEY]
    problems = tree.warnings + checks.source_problems(tree, env) + errors + _command_problems(args.config)
    unmounted = not_mounted(tree.root.app[SUBAPPS])
    if unmounted:
        print(f"\ninstalled but not mounted (add to [nestor] subapps to mount): {', '.join(unmounted)}")
    deploy = args.deploy or checks.is_production(tree.root.app)
    if deploy:
        problems += checks.deploy_problems(tree, workers=1)  # worker_problems covers SQLite × N
    unreachable = checks.connection_problems(tree.root.app) if deploy else []
    problems += unreachable
    if not any(line.startswith("database_url") for line in unreachable):
        problems += dbcli.check_problems(tree.root.app, deploy)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("\nno problems found")
    return 0


def openapi_command(args: argparse.Namespace) -> int:
    """Print the OpenAPI document of the whole tree, or of one level (polls.api), without serving."""
    tree = _tree(args)
    level = tree.find(args.level) if args.level else None
    print(json.dumps(openapi.document(tree, level), indent=2, sort_keys=True))
    return 0


def new_subapp_command(args: argparse.Namespace) -> int:
    """Write a sub-app package in the project folder and add it to the config's subapps."""
    config = _config_file(args.config)
    folder = args.dir or (config.parent if config is not None else Path.cwd())
    written = scaffold.new_subapp(args.name, folder, prefix=args.prefix, config=config)
    print(f"wrote {len(written)} files in {folder / args.name}")
    if config is not None:
        print(f"mounted it: {config} lists {args.name!r} in [nestor] subapps")
    print(f"next: nestor serve, then open {args.prefix or '/' + args.name}/; tests: python -m pytest {args.name}")
    return 0


def new_project_command(args: argparse.Namespace) -> int:
    """Write a project folder: nestor.toml, templates/ and a first sub-app."""
    args.dir.mkdir(parents=True, exist_ok=True)
    written = scaffold.new_project(args.dir, args.subapp)
    print(f"wrote {len(written)} files in {args.dir}")
    print(f"next: cd {args.dir} && nestor serve   (tests: python -m pytest)")
    return 0


def _config_file(given: str | None) -> Path | None:
    """The config file in use, as `load` finds it: --config, $NESTOR_CONFIG, ./nestor.toml; None if none."""
    chosen = given or os.environ.get(CONFIG_ENV) or ("nestor.toml" if Path("nestor.toml").is_file() else None)
    return Path(chosen).resolve() if chosen else None
