"""The `nestor` command line: the parser and the dispatch (what each command does is in `commands`).

A sub-app adds `nestor <name>` with `SubApp(commands=[Command(name, run, help)])`: the
command line reads the configuration (`--config FILE` before the command, else
$NESTOR_CONFIG, else ./nestor.toml), finds the commands of the sub-apps it names without
building the app, lists them in `nestor --help`, and hands `run` the rest of the arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import dbcli
from . import serve as serving
from .commands import (
    BUILT_IN,
    check_command,
    config_command,
    configured_commands,
    new_project_command,
    new_subapp_command,
    openapi_command,
    routes_command,
    serve_command,
)
from .config import ConfigError
from .logs import say
from .subapp import Command



def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_file, rest = _leading_config(argv)
    try:
        if rest and rest[0] not in BUILT_IN and not rest[0].startswith("-"):
            return _subapp_command(config_file, rest)
        args = _parser(*_listed_commands(config_file)).parse_args(argv)
        if getattr(args, "config", None) is None:
            args.config = config_file
        return args.run(args)
    except ConfigError as e:
        say(f"nestor: error: {e}", level=logging.ERROR)
        return 1


def _subapp_command(config_file: str | None, argv: list[str]) -> int:
    commands = configured_commands(config_file)
    command = commands.get(argv[0])
    if command is None:
        known = ", ".join([*BUILT_IN, *sorted(commands)])
        print(f"nestor: error: unknown command {argv[0]!r}; the commands here are: {known}", file=sys.stderr)
        return 2
    return command.run(argv[1:])


def _listed_commands(config_file: str | None) -> tuple[dict[str, Command], ConfigError | None]:
    # For `nestor --help` only: a configuration that cannot be read still gets the built-in help.
    try:
        return configured_commands(config_file), None
    except ConfigError as e:
        return {}, e


def _leading_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Return the `--config FILE` given before the command, and the arguments from the command on."""
    if len(argv) >= 2 and argv[0] == "--config":
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--config="):
        return argv[0].partition("=")[2], argv[1:]
    return None, argv


def _parser(commands: dict[str, Command], unreadable: ConfigError | None = None) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help="config file (default: $NESTOR_CONFIG, else ./nestor.toml)"
    )
    epilog = f"(the sub-apps' commands are not listed: {unreadable})" if unreadable else None
    parser = argparse.ArgumentParser(
        prog="nestor", description="A nested multi-app platform on aiohttp.", epilog=epilog
    )
    parser.add_argument("--config", metavar="FILE", help="config file, also for the sub-apps' commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--host", help="address to listen on (default: [nestor] host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: [nestor] port)")
    serve.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="log lines as text or JSON (default: [nestor] log_format)"
    )
    _worker_arguments(serve)
    serve.add_argument(
        "--loop",
        choices=serving.LOOPS,
        default="auto",
        help="event loop of each process (default: auto, uvloop when installed)",
    )
    serve.add_argument("--pid-file", type=Path, metavar="PATH", help="write the pid here (removed at exit)")
    serve.add_argument(
        "--overlap",
        action="store_true",
        help="start even if another nestor serve has this address (a deploy: start the new, then stop the old)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development: restart when a Python file, template or config file of the project or of a "
        "mounted sub-app changes (one worker, development mode only)",
    )
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
    _worker_arguments(check)
    check.add_argument("--deploy", action="store_true", help="also run the deploy checks (always on in production mode)")
    check.set_defaults(run=check_command)

    document = sub.add_parser("openapi", parents=[common], help="print an OpenAPI 3.1 document, without serving")
    document.add_argument("level", nargs="?", help="one level, e.g. polls.api (default: the whole tree)")
    document.set_defaults(run=openapi_command)

    new_subapp = sub.add_parser(
        "new-subapp", parents=[common], help="write a new sub-app package in the project and mount it"
    )
    new_subapp.add_argument("name", metavar="NAME", help="the sub-app's name and package, e.g. notes")
    new_subapp.add_argument("--prefix", help="where to mount it (default: /NAME)")
    new_subapp.add_argument("--dir", type=Path, help="the project folder (default: the config file's, else .)")
    new_subapp.set_defaults(run=new_subapp_command)

    new_project = sub.add_parser("new-project", help="write a new project: nestor.toml, templates/, one sub-app")
    new_project.add_argument("dir", metavar="DIR", type=Path, help="the folder to create it in")
    new_project.add_argument("--subapp", default="notes", help="its first sub-app (default: %(default)s)")
    new_project.set_defaults(run=new_project_command)

    dbcli.add_parser(sub, common)

    for name, command in sorted(commands.items()):
        added = sub.add_parser(name, help=command.help or "a sub-app's command", add_help=False)
        added.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_count,
        default=None,
        metavar="N",
        help="worker processes sharing the port, under a supervisor that reloads them on SIGHUP "
        "(default: one process, no supervisor; more than 1 needs PostgreSQL and a redis:// bus)",
    )
    parser.add_argument(
        "--allow-memory-bus",
        action="store_true",
        help="allow --workers > 1 with bus_url = memory://: bus messages then stay in their worker",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
