"""Nestor under gunicorn with aiohttp's worker (README: "The root factory also works with other
runners"): the same refusals as `nestor serve --workers N`, one monitor schedule for the site
whatever the number of workers, and the monitor's own target on the port gunicorn bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ..fixtures.redis import RedisServer, free_port, redis_server  # noqa: F401 (a fixture)

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def gunicorn(tmp_path: Path, port: int, workers: int, config: str) -> subprocess.Popen[bytes]:
    (tmp_path / "nestor.toml").write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    command = [
        str(BIN / "gunicorn"), "nestor.app:create_app()", "--worker-class", "aiohttp.GunicornWebWorker",
        "--bind", f"127.0.0.1:{port}", "-w", str(workers), "--graceful-timeout", "5",
    ]  # fmt: skip
    with (tmp_path / "gunicorn.log").open("wb") as log:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)


@contextmanager
def serving(tmp_path: Path, workers: int, config: str) -> Iterator[int]:
    """Run gunicorn in `tmp_path` with `config` as nestor.toml; yield its port once it answers."""
    port = free_port()
    server = gunicorn(tmp_path, port, workers, config)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                get(port, "/health")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log_of(tmp_path)
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.load(resp)


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "gunicorn.log").read_text(errors="replace")


def site_config(tmp_path: Path, bus_url: str, monitor: str = "") -> str:
    return (
        f'[nestor]\nsubapps = ["monitor"]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "site.sqlite3"}"\n'
        f'bus_url = "{bus_url}"\n[monitor]\n{monitor}'
    )


def test_several_workers_with_the_in_process_bus_are_refused(tmp_path: Path) -> None:
    server = gunicorn(tmp_path, free_port(), 2, site_config(tmp_path, "memory://"))
    assert server.wait(timeout=START_TIMEOUT) != 0  # gunicorn halts: "Worker failed to boot"
    log = log_of(tmp_path)
    assert "gunicorn -w 2: bus_url is 'memory://', which is private to each process" in log
    assert "Set bus_url to a redis:// URL, or run one worker (-w 1)" in log


def test_three_workers_check_each_target_once_per_interval(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    port = free_port()
    target = f'targets = [{{ name = "site", url = "http://127.0.0.1:{port}/health/live", interval = 1 }}]\n'
    config = site_config(tmp_path, redis_server.url(), target)
    server = gunicorn(tmp_path, port, 3, config)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                first = get(port, "/monitor/api/targets/site")["last_check"]
                if first is not None:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log_of(tmp_path)
            time.sleep(0.2)
        time.sleep(4.0)
        checks = get(port, "/monitor/api/targets/site/checks?limit=100")["items"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    since_first = [c for c in checks if c["id"] >= first["id"]]
    # About 5 checks in ~4 s at one a second; three schedules would have made about 15.
    assert 4 <= len(since_first) <= 6, [c["checked_at"] for c in since_first]
    assert "SQLite, which lets one writer in at a time" in log_of(tmp_path)  # warned, as nestor serve does


def test_the_default_target_is_the_port_gunicorn_bound(tmp_path: Path) -> None:
    # The settings say 8080 (the default); gunicorn binds another port.
    with serving(tmp_path, 1, site_config(tmp_path, "memory://")) as port:
        deadline = time.monotonic() + 10
        while (status := get(port, "/monitor/api/targets/nestor"))["state"] == "unknown":
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
    assert status["url"] == f"http://127.0.0.1:{port}/health"
    assert status["state"] == "up", status
