"""Secrets stay secret: known secrets set everywhere they can be, then every GET route is crawled.

The site is the default one (every first-party sub-app), in development and in production
mode, read anonymously and with each token. A secret found in any body, any header or any log
record fails the test with the URL that showed it.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nestor import Setting, redact

from ..conftest import MakeApp

SUBAPPS = ["polls", "chat", "monitor", "hello", "admin"]
# Distinct, long enough for production (32+), and easy to find in any text.
SECRET_KEY = "SECRETKEY-" + "k" * 32
ADMIN = "ADMINTOKEN-" + "a" * 32
API = "APITOKEN-" + "p" * 32
POLLS_API = "POLLSAPITOKEN-" + "q" * 32
METRICS = "METRICSTOKEN-" + "m" * 32
TARGET_PASSWORD = "TARGETPASSWORD-" + "t" * 8
TARGET_KEY = "TARGETAPIKEY-" + "u" * 8
TARGET_TOKEN = "TARGETTOKEN-" + "v" * 8
SECRETS = [SECRET_KEY, ADMIN, API, POLLS_API, METRICS, TARGET_PASSWORD, TARGET_KEY, TARGET_TOKEN]
SAMPLE = {"question_id": "1", "room": "lobby", "target": "watched", "filename": "nope.css"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def tables(mode: str) -> dict[str, Any]:
    target = (
        f"http://watcher:{TARGET_PASSWORD}@127.0.0.1:{closed_port()}/status"
        f"?apikey={TARGET_KEY}&page=1&access_token={TARGET_TOKEN}"
    )
    return {
        "nestor": {
            "mode": mode,
            "subapps": SUBAPPS,
            "secret_key": SECRET_KEY,
            "admin_token": ADMIN,
            "api_token": API,
            "metrics_token": METRICS,
            "trusted_proxies": ["127.0.0.1"],
        },
        "polls": {"api": {"api_token": POLLS_API}},
        "monitor": {"targets": [{"name": "watched", "url": target, "interval": 3600}]},
    }


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


async def crawl(client: TestClient, where: str) -> list[str]:
    """GET every route (path parameters filled in) with each identity; return what leaked where."""
    async with client.get("/routes.json", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        routes = [route["path"] for route in await resp.json() if route["method"] == "GET"]
    assert len(routes) > 40  # the whole default tree, not an empty site
    urls = []
    for path in routes:
        filled = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: SAMPLE.get(m.group(1), "x"), path)
        urls += [filled, f"/routes/explain?path={filled}"]
    urls += ["/routes/explain?path=/monitor/watched&method=GET", "/monitor/api/targets/watched/checks?limit=5"]
    found = []
    # Wrong tokens are part of the crawl: each request comes from its own (forwarded) client
    # address, so the failed-token limit never answers 429 in place of the page.
    clients = (f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(1, 1 << 24))
    for url in urls:
        for token in (None, ADMIN, API, POLLS_API, METRICS):
            headers = {"Accept": "text/html"} if token is None else {"Authorization": f"Bearer {token}"}
            for accept in ("text/html", "application/json"):
                async with client.get(url, headers={**headers, "Accept": accept, "X-Forwarded-For": next(clients)}) as resp:
                    body = await resp.read()
                    shown = body.decode("utf-8", "replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
                    # A page may say which token is wanted, never repeat the one it was sent.
                    shown = shown.replace(f"Bearer {token}", "") if token else shown
                    assert resp.status < 500, f"{where} GET {url}: {resp.status}\n{body[:500]!r}"
                found += [f"{where} GET {url} (token {token and token[:12]}, {accept}): {secret[:16]}…" for secret in leaks(shown)]
    return found


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


async def test_no_secret_on_any_page_or_log_in_development_and_production(
    make_app: MakeApp, aiohttp_client: Any, records: pytest.LogCaptureFixture
) -> None:
    found = []
    # Development first: it applies the migrations and seeds the sample data production reads.
    for mode in ("development", "production"):
        app = make_app(tables(mode), specs=[])
        client = await aiohttp_client(app)
        found += await crawl(client, mode)
        await client.close()
    logged = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in records.records)
    found += [f"log: {secret[:16]}…" for secret in leaks(logged)]
    assert not found, "secrets shown:\n" + "\n".join(found)


async def test_explain_shows_the_targets_with_their_secret_parts_hidden(
    make_app: MakeApp, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(make_app(tables("development"), specs=[]))
    async with client.get("/routes/explain", params={"path": "/monitor/watched"}, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert not leaks(text)
    assert "watcher:***@127.0.0.1" in text  # the rest of the URL stays readable
    assert "apikey=***" in text and "access_token=***" in text and "page=1" in text


def test_the_config_and_check_commands_hide_secrets(tmp_path: Path) -> None:
    config = tables("production")
    config["nestor"]["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'nestor.sqlite3'}"
    lines = []
    config["polls.api"] = config["polls"].pop("api")
    for name, table in config.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items() if key != "targets"]
        for target in table.get("targets", []):
            fields = ", ".join(f"{key} = {json.dumps(value)}" for key, value in target.items())
            lines.append(f"targets = [{{{fields}}}]")
    (tmp_path / "nestor.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for command in (["config"], ["config", "--json"], ["check", "--deploy"], ["db", "status"]):
        result = subprocess.run(
            [sys.executable, "-m", "nestor.cli", *command], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode in (0, 1), result.stderr
        assert not leaks(result.stdout + result.stderr), f"nestor {' '.join(command)} shows a secret:\n{result.stdout}"
    shown = subprocess.run(
        [sys.executable, "-m", "nestor.cli", "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    ).stdout
    assert "apikey=***" in shown and "admin_token" in shown


def test_a_setting_names_its_own_secret_parts() -> None:
    webhooks = Setting("webhooks", list, [], secret_parts=("signing",), help="Where to post")
    value = [{"url": "https://hooks.example/h?code=abc&sig=XYZ", "signing": "s3cr3t", "retries": 3}]
    assert webhooks.show(value) == [{"url": "https://hooks.example/h?code=abc&sig=***", "signing": "***", "retries": 3}]
    assert redact({"github_token": "ghp_x", "name": "n"}) == {"github_token": "***", "name": "n"}
    assert redact("postgresql+asyncpg://nestor:pw@db/nestor") == "postgresql+asyncpg://nestor:***@db/nestor"
    plain = "https://example.org/path?page=2"
    assert redact(plain) is plain  # nothing secret: the very same text
