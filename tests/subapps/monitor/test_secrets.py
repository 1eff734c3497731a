"""A target URL's password and secret query values never show: not on the pages, in the API,
on the websocket, in a check's stored error, nor in the logs."""

from __future__ import annotations

import logging

import pytest
from pytest_aiohttp import AiohttpClient

from .conftest import BuildMonitor, Client, Upstream, checks_of, first_check, free_port, target

PASSWORD, KEY, TOKEN = "PASSWORD-of-the-target", "APIKEY-of-the-target", "TOKEN-of-the-target"
SECRETS = (PASSWORD, KEY, TOKEN)


def secret_url(host_port: str, path: str = "/status") -> str:
    return f"http://watcher:{PASSWORD}@{host_port}{path}?apikey={KEY}&page=1&access_token={TOKEN}"


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> Client:
    """Targets whose URLs carry secrets: one refused, one redirected to ftp, one to another host."""
    caplog.set_level(logging.DEBUG)
    here = upstream.url("/").removeprefix("http://").rstrip("/")
    upstream.redirects["ftp"] = f"ftp://watcher:{PASSWORD}@127.0.0.1/f?token={TOKEN}"
    upstream.redirects["elsewhere"] = f"http://127.0.0.1:{free_port()}/x?apikey={KEY}"
    targets = [
        target("refused", secret_url(f"127.0.0.1:{free_port()}")),
        target("ftp", secret_url(here, "/redirect/ftp")),
        target("elsewhere", secret_url(here, "/redirect/elsewhere")),
    ]
    client = await aiohttp_client(make_monitor(targets))
    for name in ("refused", "ftp", "elsewhere"):
        await first_check(client, name)
    return client


async def test_failed_checks_store_errors_without_the_secrets(client: Client) -> None:
    errors = {name: (await checks_of(client, name))[0] for name in ("refused", "ftp", "elsewhere")}
    assert {name: check["error"] for name, check in errors.items()} == {
        "refused": "refused",
        "ftp": "redirect",
        "elsewhere": "redirect",
    }
    assert "ftp://watcher:***@127.0.0.1/f?token=***" in errors["ftp"]["detail"]
    assert errors["elsewhere"]["detail"].startswith("redirected to another host: 127.0.0.1:")
    assert not leaks(str(errors))


@pytest.mark.parametrize(
    "path",
    ["/monitor/api/targets", "/monitor/api/targets/ftp", "/monitor/api/targets/refused/checks", "/monitor/", "/monitor/ftp"],
)
async def test_pages_and_the_api_show_target_urls_with_secrets_hidden(client: Client, path: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert not leaks(text)
    if "checks" not in path:
        assert "watcher:***@127.0.0.1" in text and "apikey=***" in text and "access_token=***" in text
        assert "page=1" in text  # the rest of the URL stays readable


async def test_the_live_websocket_sends_no_secret(client: Client) -> None:
    async with client.ws_connect("/monitor/ws") as ws:
        first = [await ws.receive_str(timeout=5) for _ in range(3)]  # each target's last check
    assert not leaks("\n".join(first))


async def test_the_logs_show_no_secret(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    async with client.get("/monitor/") as resp:
        assert resp.status == 200
    records = caplog.get_records("setup") + caplog.get_records("call")
    # The target server's own access log shows what it was asked: that is the target's log, not ours.
    ours = [r for r in records if "Nestor-monitor/" not in r.getMessage()]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert "monitor: this process checks the 3 target(s)" in logged
    assert not leaks(logged)
