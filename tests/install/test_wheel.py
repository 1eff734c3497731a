"""Nestor as people install it: the wheel, in a throw-away virtualenv outside the checkout.

The wheel is built from this checkout and installed with pip (its dependencies from the
index, as a user's would be); `nestor serve` then runs in an empty folder that holds only a
`nestor.toml` and a project-local sub-app. Nothing from the checkout is on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ..fixtures.served import serve

REPO = Path(__file__).resolve().parents[2]
GREETER = '''
from aiohttp import web
from nestor import Setting, SubApp, json_response

GREETING = Setting("greeting", str, "Hello", help="How the greeter greets")

async def hello(request: web.Request) -> web.Response:
    return json_response({"text": f"{request.config_dict[GREETING]}, world!"})

def create_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", hello, name="index")])
    return app

subapp = SubApp(name="greeter", prefix="/greeter", factory=create_app, settings=[GREETING])
'''


@dataclass
class Installed:
    wheel: Path
    nestor: Path  # the installed `nestor` command
    python: Path
    install_seconds: float


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("NESTOR_")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel and install it in a new virtualenv; return the venv's commands."""
    place = tmp_path_factory.mktemp("wheel")
    # setuptools copies a file into build/lib only when it is newer than the copy there: a
    # checkout that moved a file's time back would ship the stale copy. Build from nothing.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", place / "dist", REPO, cwd=place)
    [wheel] = (place / "dist").glob("nestor-*.whl")
    run(sys.executable, "-m", "venv", place / "venv", cwd=place)
    python = place / "venv" / "bin" / "python"
    started = time.perf_counter()
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=place)
    yield Installed(wheel, place / "venv" / "bin" / "nestor", python, time.perf_counter() - started)


def test_the_wheel_ships_templates_and_static_files_and_no_top_level_subapps(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "nestor/templates/base.html" in names
    assert "nestor/static/nestor.css" in names
    assert "nestor_subapps/polls/templates/polls/index.html" in names
    assert "nestor_subapps/polls/static/polls.css" in names
    assert "nestor_subapps/polls/migrations/0001_baseline.py" in names
    assert {"nestor/migration_env/env.py", "nestor/migration_env/script.py.mako"} <= set(names)
    assert not [n for n in names if n.startswith(("subapps/", "templates/", "tests/", "platform/"))]


def test_the_installed_package_is_not_the_checkout(installed: Installed, tmp_path: Path) -> None:
    shown = run(installed.python, "-c", "import nestor, nestor_subapps; print(nestor.__file__)", cwd=tmp_path)
    assert "site-packages" in shown.stdout and str(REPO) not in shown.stdout


async def test_nestor_serve_in_an_empty_folder_serves_real_pages(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "greeter").mkdir()
    (tmp_path / "greeter" / "__init__.py").write_text(GREETER, encoding="utf-8")
    started = time.perf_counter()
    served = await serve(tmp_path, 'subapps = ["polls", "greeter"]', program=[str(installed.nestor)])
    try:
        async with aiohttp.ClientSession() as session:
            pages = {}
            for path in ("/", "/polls/", "/routes", "/health", "/greeter/", "/static/nestor.css", "/polls/static/polls.css"):
                async with session.get(served.url + path) as resp:
                    pages[path] = (resp.status, await resp.text())
        first_page = time.perf_counter() - started
    finally:
        await served.stop()
    assert {path: status for path, (status, _) in pages.items()} == dict.fromkeys(pages, 200), served.log()
    assert '<a href="/polls/"><strong>Polls</strong></a>' in pages["/"][1]
    assert "What do you like best in aiohttp?" in pages["/polls/"][1]  # the sample questions
    assert "greeter:index" in pages["/routes"][1]
    assert pages["/greeter/"][1] == '{"text":"Hello, world!"}'
    print(f"\nwheel: pip install {installed.install_seconds:.1f} s, nestor serve to a served page {first_page:.1f} s")


def test_nestor_check_in_the_installed_project_finds_no_problem(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "nestor.toml").write_text('[nestor]\nsubapps = ["polls", "chat", "monitor", "hello", "admin"]\n')
    result = run(installed.nestor, "check", cwd=tmp_path)
    assert "no problems found" in result.stdout


async def test_a_scaffolded_subapp_publishes_as_its_own_distribution(installed: Installed, tmp_path: Path) -> None:
    # Written by the installed nestor, built as a wheel, installed beside Nestor, mounted by its entry-point name.
    run(installed.nestor, "new-subapp", "journal", "--dir", tmp_path / "src", cwd=tmp_path)
    run(installed.python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist", tmp_path / "src" / "journal", cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("nestor_journal-*.whl")
    run(installed.python, "-m", "pip", "install", "--quiet", "--no-deps", wheel, cwd=tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    served = await serve(project, 'subapps = ["journal"]', program=[str(installed.nestor)])
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/journal/") as resp:
                page = (resp.status, await resp.text())
            async with session.post(served.url + "/journal/api/items", json={"text": "shipped"}) as resp:
                created = resp.status
    finally:
        await served.stop()
    assert page[0] == 200, served.log()
    assert "<h1>Journal</h1>" in page[1]
    assert created == 201
