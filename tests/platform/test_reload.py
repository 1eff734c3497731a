"""`nestor serve --reload` as real processes: edits to a project's code, templates and nestor.toml
reach the running server, broken code leaves the last good server serving, and no server
outlives the reloader."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ..fixtures.cli_run import nestor
from ..fixtures.served import REPO, free_port

WAIT = 15.0  # seconds any one wait may take

GREETER = '''\
"""A project-local sub-app: JSON at /greeter/, a template page at /greeter/page."""

import aiohttp_jinja2
from aiohttp import web

from nestor import PAGE_SIZE, SubApp

ANSWER = "one"


async def index(request: web.Request) -> web.Response:
    return web.json_response({"answer": ANSWER, "page_size": request.config_dict[PAGE_SIZE]})


@aiohttp_jinja2.template("greeter/page.html")
async def page(request: web.Request) -> dict[str, str]:
    return {}


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", index, name="index"), web.get("/page", page, name="page")])
    return app


subapp = SubApp(name="greeter", prefix="/greeter", factory=create_app, templates="templates")
'''


def write_project(folder: Path) -> Path:
    """Write nestor.toml mounting the project-local `greeter` sub-app; return the config file."""
    package = folder / "greeter"
    (package / "templates" / "greeter").mkdir(parents=True)
    (package / "__init__.py").write_text(GREETER, encoding="utf-8")
    (package / "templates" / "greeter" / "page.html").write_text("<p>first page</p>\n", encoding="utf-8")
    config = folder / "nestor.toml"
    config.write_text(
        f'[nestor]\nsubapps = ["greeter"]\ndatabase_url = "sqlite+aiosqlite:///{folder / "db.sqlite3"}"\n',
        encoding="utf-8",
    )
    return config


def edit(file: Path, old: str, new: str) -> None:
    text = file.read_text(encoding="utf-8")
    assert old in text
    file.write_text(text.replace(old, new), encoding="utf-8")


def children_of(pid: int) -> list[int]:
    """Return the processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rpartition(")")[2].split()  # state, ppid, ...
        except OSError:
            continue  # gone meanwhile
        if int(after_name[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class Reloading:
    """A running `nestor serve --reload` on a project in `folder`."""

    process: asyncio.subprocess.Process
    url: str
    port: int
    folder: Path

    def log(self) -> str:
        return (self.folder / "reload.log").read_text(encoding="utf-8", errors="replace")

    async def body(self, path: str) -> str | None:
        """Return the body of GET `path`, or None while nothing answers."""
        try:
            async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
                return await resp.text()
        except aiohttp.ClientConnectionError:
            return None

    async def wait_for(self, path: str, wanted: str) -> str:
        """Poll `path` until its body contains `wanted`; return the body."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while asyncio.get_running_loop().time() < deadline:
            body = await self.body(path)
            if body is not None and wanted in body:
                return body
            await asyncio.sleep(0.1)
        pytest.fail(f"GET {path} never contained {wanted!r}; last body {body!r}; log:\n{self.log()}")

    async def wait_for_log(self, wanted: str) -> str:
        """Wait until the log has a line containing `wanted`; return that line."""
        for _ in range(int(WAIT / 0.1)):
            lines = [line for line in self.log().splitlines() if wanted in line]
            if lines:
                return lines[0]
            await asyncio.sleep(0.1)
        pytest.fail(f"the log never said {wanted!r}:\n{self.log()}")


@pytest.fixture
async def reloading(tmp_path: Path) -> AsyncIterator[Reloading]:
    config = write_project(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO)])
    with (tmp_path / "reload.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nestor.cli", "serve", "--reload", "--config", str(config),
            "--port", str(port), cwd=tmp_path, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )
    served = Reloading(process, f"http://127.0.0.1:{port}", port, tmp_path)
    try:
        await served.wait_for("/greeter/", '"answer": "one"')
        yield served
    finally:
        servers = children_of(process.pid)
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), WAIT)
            except TimeoutError:
                process.kill()
                await process.wait()
        for pid in servers:  # only still there if the reloader failed to stop them
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def test_editing_python_changes_the_answer_and_names_the_file(reloading: Reloading) -> None:
    edit(reloading.folder / "greeter" / "__init__.py", 'ANSWER = "one"', 'ANSWER = "two"')
    await reloading.wait_for("/greeter/", '"answer": "two"')
    assert "nestor: reload: greeter/__init__.py changed" in reloading.log()


async def test_editing_a_template_changes_the_page(reloading: Reloading) -> None:
    assert "first page" in await reloading.wait_for("/greeter/page", "<p>")
    page = reloading.folder / "greeter" / "templates" / "greeter" / "page.html"
    page.write_text("<p>second page</p>\n", encoding="utf-8")
    await reloading.wait_for("/greeter/page", "second page")


async def test_changing_a_setting_in_nestor_toml_takes_effect(reloading: Reloading) -> None:
    assert '"page_size": 20' in await reloading.wait_for("/greeter/", "page_size")
    with (reloading.folder / "nestor.toml").open("a", encoding="utf-8") as config:
        config.write("page_size = 7\n")  # the file ends inside [nestor]
    await reloading.wait_for("/greeter/", '"page_size": 7')


async def test_broken_python_keeps_the_last_good_server_until_fixed(reloading: Reloading) -> None:
    before = await reloading.body("/greeter/")
    code = reloading.folder / "greeter" / "__init__.py"
    edit(code, 'ANSWER = "one"', 'ANSWER = "one"\ndef broken(:\n')
    line = await reloading.wait_for_log("the new code does not start")
    assert "the last good server keeps serving" in line
    assert "SyntaxError" in line
    assert await reloading.body("/greeter/") == before
    edit(code, 'ANSWER = "one"\ndef broken(:\n', 'ANSWER = "fixed"')
    await reloading.wait_for("/greeter/", '"answer": "fixed"')
    assert "Traceback" not in reloading.log()


async def test_sigterm_stops_the_reloader_and_its_server(reloading: Reloading) -> None:
    (server,) = children_of(reloading.process.pid)
    reloading.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(reloading.process.wait(), WAIT) == 0
    assert not Path(f"/proc/{server}").exists()  # reaped, not orphaned
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", reloading.port), 1):
        pass
    assert "Traceback" not in reloading.log()


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--workers", "2"], {}, "nestor: error: --reload runs one process; drop --workers or --reload"),
        ([], {"NESTOR_MODE": "production"}, "nestor: error: --reload is for development"),
    ],
    ids=["workers", "production"],
)
def test_reload_refuses_with_one_line(
    tmp_path: Path, extra: list[str], env: dict[str, str], message: str
) -> None:
    config = write_project(tmp_path)
    result = nestor("serve", "--reload", "--config", str(config), "--port", str(free_port()), *extra,
                    cwd=tmp_path, env=env)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)
