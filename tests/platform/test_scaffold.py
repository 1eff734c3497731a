"""`nestor new-project` and `nestor new-subapp`: what they write mounts, serves and passes its own tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..fixtures.cli_run import REPO, nestor


def run_tests(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest in a generated project, as its author would (a fresh process, no repository on the path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("NESTOR_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=180,
    )


def test_a_new_project_passes_its_generated_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    made = nestor("new-project", str(tmp_path / "site"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = run_tests(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout
    with capsys.disabled():
        print(f"\nscaffold: new-project to green tests in {time.perf_counter() - started:.1f} s")


def test_new_project_writes_config_templates_and_one_subapp(tmp_path: Path) -> None:
    assert nestor("new-project", str(tmp_path / "site"), "--subapp", "journal", cwd=tmp_path).returncode == 0
    site = tmp_path / "site"
    assert 'subapps = ["journal"]' in (site / "nestor.toml").read_text()
    assert (site / "templates" / "footer.html").is_file()
    assert (site / "journal" / "migrations" / "0001_first.py").is_file()
    routes = nestor("routes", "--fields", "method,path,name", cwd=site)
    assert routes.returncode == 0, routes.stderr
    assert "/journal/api/items/{item_id}  journal:api:item" in routes.stdout


def test_new_subapp_in_a_project_is_mounted_and_checks_clean(tmp_path: Path) -> None:
    assert nestor("new-project", str(tmp_path / "site"), cwd=tmp_path).returncode == 0
    site = tmp_path / "site"
    made = nestor("new-subapp", "team_todo", "--prefix", "/todo", cwd=site)
    assert made.returncode == 0, made.stderr
    assert 'subapps = ["notes", "team_todo"]' in (site / "nestor.toml").read_text()
    checked = nestor("check", cwd=site)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "  [team_todo] /todo" in checked.stdout
    result = run_tests(site, "team_todo")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Notes", "sub-app name 'Notes' is not valid"),
        ("polls", "'polls' is already the name of an installed sub-app or module"),
        ("json", "'json' is already the name of an installed sub-app or module"),
        ("notes", "exists already"),
    ],
)
def test_new_subapp_refuses_a_name_that_cannot_work(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "notes").mkdir()
    result = nestor("new-subapp", name, "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr


def test_new_subapp_says_how_to_mount_it_when_the_config_has_no_simple_list(tmp_path: Path) -> None:
    (tmp_path / "nestor.toml").write_text('[nestor]\nsubapps = [\n  "hello",\n]\n')
    result = nestor("new-subapp", "notes", cwd=tmp_path)
    assert result.returncode == 1
    assert 'add "notes" to [nestor] subapps' in result.stderr
    assert (tmp_path / "notes" / "__init__.py").is_file()


def test_new_project_refuses_an_existing_project(tmp_path: Path) -> None:
    (tmp_path / "nestor.toml").write_text("[nestor]\n")
    result = nestor("new-project", str(tmp_path), cwd=REPO)
    assert result.returncode == 1
    assert "is a project" in result.stderr
