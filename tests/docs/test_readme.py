"""README.md's examples, run: the sub-app tutorial end to end, the configuration example, the commands.

The tutorial ("Writing a sub-app") is executed block by block in an empty project folder, as
a reader would: each file block (its first line names the file) is written, each shell line
is run with this environment's `nestor` and `python` on PATH and nothing of the checkout on
PYTHONPATH. `nestor serve` runs in the background on a free port (the README's 8080 is
rewritten to it); the test checks what the README says the commands print.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nestor import PAGE_SIZE, create_app
from nestor.config import from_mapping
from nestor.tree import TREE

from ..fixtures.served import free_port

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BIN = Path(sys.executable).parent


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def blocks(title: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(section(title))]


def file_name(language: str, body: str) -> str | None:
    """The file a block holds, from its first line: `# notes/db.py`, `{# notes/templates/x.html #}`;
    `# notes/db.py: the table, changed` holds a changed part of a file written before."""
    first = body.splitlines()[0].strip()
    found = re.fullmatch(r"(?:# |\{# )([\w./-]+\.\w+)(?: #\}|: .*)?", first)
    return found.group(1) if found and language in ("python", "toml", "html") else None


def patched(source: str, part: str) -> str:
    """Return `source` with the top-level statement that `part` changes replaced by it."""
    lines = part.splitlines()[1:]  # the first line names the file
    tree = __import__("ast").parse(source)
    old = source.splitlines()
    [statement] = [node for node in tree.body if old[node.lineno - 1] == lines[0]]
    return "\n".join(old[: statement.lineno - 1] + lines + old[statement.end_lineno :]) + "\n"


@dataclass
class Reader:
    """Someone following the tutorial in `folder`: writes its files, runs its commands."""

    folder: Path
    port: int = field(default_factory=free_port)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith(("NESTOR_", "PYTEST_"))}
        return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "NESTOR_PORT": str(self.port)}

    def write(self, name: str, body: str) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if body.splitlines()[0].startswith(f"# {name}: "):  # a changed part of the file
            body = patched(path.read_text(encoding="utf-8"), body)
        path.write_text(body, encoding="utf-8")

    def run(self, line: str) -> None:
        line = line.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        if line.startswith("nestor serve"):
            self.start(shlex.split(line.rstrip("& ")))
            return
        result = subprocess.run(line, shell=True, cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        self.outputs.append((line, result.stdout))

    def start(self, command: list[str]) -> None:
        with (self.folder / "server.log").open("wb") as log:  # the child keeps its own copy open
            self.server = subprocess.Popen(command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).read()
                return
            except OSError:
                assert self.server.poll() is None, (self.folder / "server.log").read_text()
                time.sleep(0.2)
        raise AssertionError("nestor serve did not answer /health in 30 s:\n" + (self.folder / "server.log").read_text())

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def output_of(self, fragment: str) -> str:
        return next(out for line, out in self.outputs if fragment in line)


@pytest.fixture
def reader(tmp_path: Path) -> Reader:
    follower = Reader(tmp_path)
    yield follower
    follower.stop()


def test_the_tutorial_runs_as_written(reader: Reader) -> None:
    steps = blocks("Writing a sub-app")
    assert len(steps) >= 15
    for language, body in steps:
        name = file_name(language, body)
        if name is not None:
            reader.write(name, body)
        elif language == "sh":
            for line in body.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    reader.run(line.strip())
        else:
            raise AssertionError(f"a {language} block the test cannot run:\n{body}")
    hello = reader.output_of("/greeter/api/hello")
    assert hello == '{"text":"Hello, Ada!","page_size":20}'
    assert '"text":"Buy milk"' in reader.output_of('"Buy milk"')
    assert '"errors":{"text":"Write something: the note is empty."}' in reader.output_of('{"text": ""}')
    assert reader.output_of("%{http_code}") == "301\n"
    assert "3 passed" in reader.output_of("pytest")
    assert list((reader.folder / "dist").glob("nestor_notes-0.1.0-*.whl"))
    assert "max_length" in reader.output_of("nestor config notes.api")
    document = json.loads(reader.output_of("/notes/api/openapi.json"))
    assert document["paths"]["/notes/api/notes"]["post"]["operationId"] == "notes:api:notes.post"
    assert "0002_pinned.py" in reader.output_of('-m "pinned"')
    assert reader.output_of("nestor db status") == (  # the kernel's own history (its login table) first
        "nestor: at 0001, head 0001: up to date\nnotes: at 0002, head 0002: up to date\n"
    )
    assert "op.create_table('notes_note'" in (reader.folder / "notes" / "migrations" / "0001_notes.py").read_text()


def test_the_configuration_example_does_what_it_says(tmp_path: Path) -> None:
    [toml] = [body for language, body in blocks("Configuration") if language == "toml"]
    import tomllib

    tables = tomllib.loads(toml)
    tables["nestor"]["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    tree = create_app(from_mapping(tables, base_dir=tmp_path))[TREE]
    sizes = {level.label: level.config()[PAGE_SIZE] for level in tree.levels}
    # "`/polls/api` sees 50, `/polls` sees 10, any other sub-app 20."
    assert (sizes["polls.api"], sizes["polls"], sizes["nestor"]) == (50, 10, 20)
    assert tree.find("polls").prefix == "/p"


@pytest.mark.parametrize(
    "line", [line for lang, body in blocks("Inspecting the route tree") if lang == "sh" for line in body.splitlines()]
)
def test_the_route_commands_run_on_the_default_configuration(line: str) -> None:
    command = shlex.split(line.partition("  #")[0])
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
    expected = 1 if "--deploy" in command else 0  # development mode fails the deploy checks, as it should
    assert result.returncode == expected, result.stdout + result.stderr
    assert result.stdout.strip()


# Blocks run elsewhere or not runnable here, each with the reason; every other block is run above.
RUN_ELSEWHERE = {
    "make run": "make test is what CI runs (.ci/run); make run's server is the one tests/install and the tutorial start",
    "NESTOR_DATABASE_URL=postgresql+asyncpg": "needs PostgreSQL and Redis: tests/platform/test_workers.py runs that setup",
    "platform/nestor/": "the layout, not a command",
    **dict.fromkeys(
        ("# /etc/nginx/conf.d/nestor.conf", "# /srv/nestor/site/nestor.toml", "# /etc/nestor/site.env",
         "# /etc/systemd/system/nestor.service"),
        "files for several hosts: tests/docs/test_deploy.py checks them (nginx -t, settings, unit) and tests/site "
        "runs the same proxy configuration",
    ),
}
RUN_HERE = ("Writing a sub-app", "Configuration", "Inspecting the route tree", "The two commands", "Running it for real")


def test_every_readme_block_is_run_or_says_why_not() -> None:
    unaccounted = []
    for found in BLOCK.finditer(README):
        body = found.group(2)
        heading = README.rfind("\n## ", 0, found.start())
        title = README[heading + 4 : README.index("\n", heading + 1)]
        if any(body.startswith(prefix) for prefix in RUN_ELSEWHERE):
            continue
        if title not in RUN_HERE:
            unaccounted.append(f"[{title}] {body.splitlines()[0]}")
    assert unaccounted == []


def test_new_project_from_the_quick_start(tmp_path: Path) -> None:
    [block] = [body for lang, body in blocks("The two commands") if body.startswith("pip install nestor")]
    line = block.splitlines()[1].partition("#")[0].split()  # the first line installs: tests/install does that
    result = subprocess.run([str(BIN / line[0]), *line[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mysite" / "nestor.toml").is_file()


def test_gunicorn_serves_the_root_factory(tmp_path: Path) -> None:
    [block] = [body for lang, body in blocks("Running it for real") if body.startswith("gunicorn")]
    port = free_port()
    command = shlex.split(block.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env["NESTOR_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    with (tmp_path / "gunicorn.log").open("wb") as log:
        server = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/polls/", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)


def declared_settings() -> set[str]:
    """Every setting the kernel and the first-party sub-apps declare, by name."""
    from nestor.app import KERNEL_SETTINGS
    from nestor.subapp import installed

    names = {s.name for s in KERNEL_SETTINGS}
    stack = [ep.load() for ep in installed().values()]
    while stack:
        spec = stack.pop()
        spec = getattr(spec, "subapp", spec)
        names |= {s.name for s in spec.settings}
        stack.extend(spec.children)
    return names


@pytest.mark.parametrize("readme", ["README.md", *sorted(str(p.relative_to(REPO)) for p in REPO.glob("subapps/*/README.md"))])
def test_readmes_name_only_settings_that_exist(readme: str) -> None:
    text = (REPO / readme).read_text(encoding="utf-8")
    named = set()
    for table in re.findall(r"^\| setting \|[^\n]*\n\|[-|]+\|\n((?:\|[^\n]*\n)+)", text, re.MULTILINE):
        for row in table.splitlines():
            named |= set(re.findall(r"`(\w+)`", row.split("|")[1]))
    for language, body in BLOCK.findall(text):
        if language == "toml" and "[project]" not in body:
            named |= set(re.findall(r"^(\w+) *=", body, re.MULTILINE))
    unknown = sorted(named - declared_settings() - {"prefix"})
    assert named, f"{readme}: no settings found to check"
    assert unknown == [], f"{readme} names settings nobody declares: {unknown}"
