"""`nestor serve --reload`: restart the server when the code of the project or of a mounted sub-app changes.

This process, the reloader, never serves and never imports a sub-app's code. It runs the real
server (`nestor serve`, one process) as a child, and watches with watchfiles the config file's
folder and the package folder of every mounted sub-app. When a Python, template or TOML file
changes, it first builds the code on disk in a fresh process, the probe (`python -m nestor.reload
CFG`): only if that succeeds does it stop the old server (SIGTERM, SIGKILL after STOP_GRACE
seconds) and start a new one, so a file saved half-written leaves the last good server serving.
The probe also reports the address and the folders to watch, which change with nestor.toml.

The server and the probe run in process groups of their own: Ctrl-C reaches only the reloader,
which forwards one SIGTERM (a second one would cut the server's graceful drain short) and waits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from watchfiles import Change, DefaultFilter, watch

from .app import HOST, PORT, create_app, root_value
from .checks import is_production
from .config import CONFIG_ENV, DEFAULT_FILE, Config, ConfigError, add_command_line, load
from .subapp import SubApp, template_folder
from .templating import TEMPLATES_DIR
from .tree import TREE

STOP_GRACE = 10.0  # seconds the old server may take to drain before it is killed
PROBE_TIMEOUT = 60.0  # seconds the probe may take to import and build the app
WATCHED_SUFFIXES = (".py", ".toml", ".html", ".jinja", ".jinja2", ".txt")
SHOWN = 3  # changed files named in the reload line; the rest are counted
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ReloadFilter(DefaultFilter):
    """Pass Python, TOML and template files; skip caches, SQLite files, logs, .git and var/."""

    ignore_entity_patterns = (
        *DefaultFilter.ignore_entity_patterns, r"\.sqlite3", r"\.log(\.\d+)?$", r"(^|[-_.])logs?\.txt$"
    )

    def __init__(self, roots: Iterable[Path]) -> None:
        super().__init__()
        self.roots = list(roots)

    def __call__(self, change: Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        file = Path(path)
        # Folder names count below a watched root only: a project may live under /var or /x/templates.
        inside = next((file.relative_to(r).parts[:-1] for r in self.roots if file.is_relative_to(r)), ())
        if {"var", "log", "logs"} & set(inside):
            return False
        return file.suffix in WATCHED_SUFFIXES or "templates" in inside


def run(args: argparse.Namespace) -> int:
    """Serve, restarting the server on each change that builds; 0 after SIGINT/SIGTERM, 1 if refused."""
    try:
        reloader = Reloader(_config_file(args), args)
    except ConfigError as e:
        return _refuse(e)
    # Before the first build (the slow part), so that Ctrl-C during it stops cleanly; a signal
    # ignored on purpose (nohup, a background job's SIGINT) stays ignored.
    handled = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN]
    previous = {sig: signal.signal(sig, reloader.on_signal) for sig in handled}
    try:
        reloader.serve()
    except ConfigError as e:  # from the first build only: later ones are reported and the old server kept
        return _refuse(e)
    finally:
        reloader.stop_server()  # also when the reloader itself fails: no server outlives it
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _refuse(error: ConfigError) -> int:
    print(f"nestor: error: {error}", file=sys.stderr, flush=True)
    return 1


def _config_file(args: argparse.Namespace) -> Path:
    """Return the config file `nestor serve` would read: --config, else $NESTOR_CONFIG, else ./nestor.toml."""
    if (args.workers or 1) > 1:
        raise ConfigError("--reload runs one process; drop --workers or --reload")
    load(args.config)  # the error `nestor serve` would give: a missing file, invalid TOML, a bad variable
    chosen = args.config if args.config is not None else os.environ.get(CONFIG_ENV)
    if chosen is None and Path(DEFAULT_FILE).is_file():
        chosen = DEFAULT_FILE
    if chosen is None:
        raise ConfigError(
            f"--reload watches the folder of the config file, and there is none: create {DEFAULT_FILE}, "
            "or pass --config FILE"
        )
    return Path(chosen).resolve()


@dataclass
class Reloader:
    """The reloader's state: the config file, the command line, the last good build and the server."""

    config_file: Path
    args: argparse.Namespace
    built: dict[str, Any] = field(default_factory=dict)  # the last good probe: host, port, folders
    stop: threading.Event = field(default_factory=threading.Event)
    server: subprocess.Popen[bytes] | None = None

    def serve(self) -> None:
        """Build and serve, then rebuild on each change until `stop` is set (ConfigError: no first build)."""
        self.built = self.probe()
        if not self.stop.is_set():
            self.start()
        while not self.stop.is_set():
            self.watch()

    def on_signal(self, signum: int, frame: object) -> None:
        """Ask the watch loop to stop; it sees the request within a step (50 ms)."""
        self.stop.set()

    def watch(self) -> None:
        """Watch the last good build's folders until they change (nestor.toml did) or `stop` is set."""
        folders = [Path(f) for f in self.built["folders"]]
        _say("watching " + ", ".join(map(str, folders)))
        for changes in watch(
            *folders, watch_filter=ReloadFilter(folders), stop_event=self.stop,
            rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False,
        ):
            self.notice_exit()
            if changes and not self.stop.is_set() and self.reload(changes, folders):
                return

    def notice_exit(self) -> None:
        """Report a server that exited on its own (a crash); the next change that builds starts one."""
        code = None if self.server is None else self.server.poll()
        if code is None:
            return
        how = f"was killed ({signal.strsignal(-code) or -code})" if code < 0 else f"exited with status {code}"
        _say(f"the server {how}; it starts again on the next change")
        self.server = None

    def reload(self, changes: set[tuple[Change, str]], folders: list[Path]) -> bool:
        """Restart the server if the new code builds; return True when the folders to watch changed."""
        try:
            built = self.probe()
        except ConfigError as e:
            kept = "the last good server keeps serving" if self.server else "no server runs until it is fixed"
            _say(f"the new code does not start; {kept}: {e}")
            return False
        _say(f"{_changed(changes, self.config_file.parent, folders)} changed: restarting the server")
        self.stop_server()
        self.built = built
        if not self.stop.is_set():
            self.start()
        return built["folders"] != [str(f) for f in folders]

    def probe(self) -> dict[str, Any]:
        """Build the code on disk in a fresh process; return its address and folders, or raise its error."""
        given = {key: value for key in ("host", "port") if (value := getattr(self.args, key)) is not None}
        command = [sys.executable, "-m", "nestor.reload", str(self.config_file), json.dumps(given)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PROBE_TIMEOUT, process_group=0
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"building the app took more than {PROBE_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            last_line = done.stderr.strip().rpartition("\n")[2]  # the probe's own one-line message
            raise ConfigError(last_line or f"the build exited with status {done.returncode}")
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])  # after what sub-apps print on import
        except (IndexError, ValueError):
            raise ConfigError(f"the build printed no result, only {done.stdout[-200:]!r}") from None

    def start(self) -> None:
        """Start `nestor serve` (one process, never --reload) where the last good build says."""
        args = self.args
        command = [
            sys.executable, "-m", "nestor.cli", "serve", "--config", str(self.config_file),
            "--host", self.built["host"], "--port", str(self.built["port"]),
            "--log-level", args.log_level, "--loop", args.loop,
        ]
        if args.log_format:
            command += ["--log-format", args.log_format]
        self.server = subprocess.Popen(command, process_group=0)

    def stop_server(self) -> None:
        """Stop the server gracefully: SIGTERM, then SIGKILL after STOP_GRACE seconds."""
        server, self.server = self.server, None
        if server is None or server.poll() is not None:
            return
        server.terminate()
        try:
            server.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _changed(changes: set[tuple[Change, str]], project: Path, folders: list[Path]) -> str:
    """Return a few of the changed files, relative to the project or to their sub-app's parent folder."""
    names = [_shown(path, project, folders) for path in sorted({Path(p) for _, p in changes})]
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _shown(path: Path, project: Path, folders: list[Path]) -> str:
    if path.is_relative_to(project):
        return str(path.relative_to(project))
    root = next((folder for folder in folders if path.is_relative_to(folder)), None)
    return str(path.relative_to(root.parent)) if root else str(path)


def _say(message: str) -> None:
    print(f"nestor: reload: {message}", file=sys.stderr, flush=True)


# -- the probe: runs in a fresh process, `python -m nestor.reload CFG GIVEN` -----------------------


def probe(config_file: str, given: dict[str, Any]) -> dict[str, Any]:
    """Build the app as `nestor serve` would; return its host, port and the folders to watch."""
    logging.getLogger("nestor").setLevel(logging.ERROR)  # the server logs the tree's warnings
    config = load(config_file)
    add_command_line(config, given)
    root = create_app(config)
    if is_production(root):
        raise ConfigError(
            '--reload is for development, and mode is "production" (in the config file or NESTOR_MODE): '
            'serve without --reload, or set mode = "development"'
        )
    folders = [str(folder) for folder in watched_folders(config, root)]
    return {"host": root[HOST], "port": root[PORT], "folders": folders}


def watched_folders(config: Config, root: web.Application) -> list[Path]:
    """Return the project folder and every mounted sub-app's package and template folders, outermost only."""
    folders = [config.base_dir, config.base_dir / root_value(config, TEMPLATES_DIR)]
    for level in root[TREE].levels:
        if level.spec is not None:
            folders += [_package_folder(level.spec), template_folder(level.spec)]
    found = {f.resolve() for f in folders if f is not None and f.is_dir()}
    outermost: list[Path] = []
    for folder in sorted(found, key=lambda f: (len(f.parts), f)):
        if not any(folder.is_relative_to(kept) for kept in outermost):
            outermost.append(folder)
    return outermost


def _package_folder(spec: SubApp) -> Path | None:
    """The folder of the outermost package above the factory's module that declares a `subapp`
    (subapps/polls/ for nestor_subapps.polls.app), else the folder of the factory's module."""
    name = getattr(spec.factory, "__module__", None) or ""
    parts = name.split(".")
    packages = [sys.modules.get(".".join(parts[:depth])) for depth in range(1, len(parts) + 1)]
    module = next((m for m in packages if isinstance(getattr(m, "subapp", None), SubApp)), packages[-1])
    file = getattr(module, "__file__", None)
    return Path(file).parent if file else None


if __name__ == "__main__":
    try:
        result = probe(sys.argv[1], json.loads(sys.argv[2]))
    except Exception as e:
        message = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        print(" ".join(message.split()), file=sys.stderr)  # one line, whatever the exception says
        sys.exit(1)
    print(json.dumps(result))
