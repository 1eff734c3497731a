"""Each check records the status, latency and error class; redirects and bodies are bounded."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient
from yarl import URL

from nestor_subapps.monitor.probe import MAX_REDIRECTS

from .conftest import (
    BuildMonitor,
    Upstream,
    check_now,
    checks_of,
    closed_port_url,
    eventually,
    first_check,
    target,
)


async def test_target_answering_200_is_up_with_its_latency(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))]))
    status = await first_check(client, "site")
    assert status["state"] == "up"
    check = status["last_check"]
    assert (check["ok"], check["status"], check["error"]) == (True, 200, None)
    assert check["latency_ms"] >= 0


async def test_target_answering_500_is_down_with_a_status_error(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/fail"))]))
    status = await first_check(client, "site")
    assert status["state"] == "down"
    check = status["last_check"]
    assert (check["status"], check["error"], check["detail"]) == (500, "status", "expected 200, got 500")


async def test_expected_statuses_other_than_200_count_as_up(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    app = make_monitor([target("site", upstream.url("/fail"), expect_status=[500, 503])])
    client = await aiohttp_client(app)
    assert (await first_check(client, "site"))["state"] == "up"


async def test_target_hanging_past_its_timeout_is_down_with_a_timeout(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/hang"), timeout=0.3)]))
    check = (await first_check(client, "site"))["last_check"]
    assert (check["status"], check["error"], check["detail"]) == (None, "timeout", "no answer within 0.3 s")


async def test_closed_port_is_down_with_refused(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor
) -> None:
    client = await aiohttp_client(make_monitor([target("site", closed_port_url())]))
    check = (await first_check(client, "site"))["last_check"]
    assert (check["status"], check["error"]) == (None, "refused")


async def test_server_that_goes_away_turns_down_with_refused(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))]))
    assert (await first_check(client, "site"))["state"] == "up"
    assert upstream.server is not None
    await upstream.server.close()
    answer = await check_now(client, "site")
    assert (answer["state"], answer["check"]["error"]) == ("down", "refused")


async def test_untrusted_tls_certificate_is_down_with_tls(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, tls_upstream: TestServer
) -> None:
    client = await aiohttp_client(make_monitor([target("site", str(tls_upstream.make_url("/")))]))
    check = (await first_check(client, "site"))["last_check"]
    assert check["error"] == "tls"
    assert "certificate" in check["detail"]


async def test_redirect_to_an_http_url_is_followed(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/to-ok"))]))
    check = (await first_check(client, "site"))["last_check"]
    assert (check["status"], check["error"]) == (200, None)
    assert upstream.hits["/ok"] == 1


async def test_redirect_to_a_non_http_scheme_is_not_followed(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/to-ftp"))]))
    check = (await first_check(client, "site"))["last_check"]
    assert check["error"] == "redirect"
    assert "ftp://127.0.0.1/file.txt" in check["detail"]
    assert "not followed" in check["detail"]


async def test_redirect_to_the_same_host_by_absolute_url_is_followed(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    upstream.redirects["here"] = upstream.url("/ok")
    site = target("site", upstream.url("/redirect/here"))
    client = await aiohttp_client(make_monitor([site]))
    check = (await first_check(client, "site"))["last_check"]
    assert (check["status"], check["error"]) == (200, None)
    assert upstream.hits["/ok"] == 1


async def test_redirect_to_another_host_is_not_followed(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, other_upstream: Upstream
) -> None:
    elsewhere = upstream.redirects["away"] = other_upstream.url("/ok")  # 127.0.0.1, another port: another host
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/redirect/away"))]))
    status = await first_check(client, "site")
    check = status["last_check"]
    port = URL(elsewhere).port
    assert (status["state"], check["status"], check["error"]) == ("down", 302, "redirect")
    assert check["detail"].startswith(f"redirected to another host: 127.0.0.1:{port} (not followed")
    assert sum(other_upstream.hits.values()) == 0


async def test_redirect_to_a_host_the_target_allows_is_followed(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, other_upstream: Upstream
) -> None:
    elsewhere = upstream.redirects["away"] = other_upstream.url("/ok")
    allowed = [f"127.0.0.1:{URL(elsewhere).port}"]
    site = target("site", upstream.url("/redirect/away"), follow_redirects_to=allowed)
    client = await aiohttp_client(make_monitor([site]))
    status = await first_check(client, "site")
    assert (status["state"], status["last_check"]["status"]) == ("up", 200)
    assert status["follow_redirects_to"] == allowed
    assert other_upstream.hits["/ok"] == 1


async def test_a_host_allowed_for_one_target_is_not_followed_for_another(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, other_upstream: Upstream
) -> None:
    elsewhere = upstream.redirects["away"] = other_upstream.url("/ok")
    to_elsewhere = upstream.url("/redirect/away")
    targets = [
        target("allowed", to_elsewhere, follow_redirects_to=[f"127.0.0.1:{URL(elsewhere).port}"]),
        target("plain", to_elsewhere),
    ]
    client = await aiohttp_client(make_monitor(targets))
    assert (await first_check(client, "allowed"))["state"] == "up"
    assert (await first_check(client, "plain"))["last_check"]["error"] == "redirect"
    assert other_upstream.hits["/ok"] == 1  # the allowed target's check only


async def test_endless_redirects_stop_at_the_limit(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/loop"))]))
    check = (await first_check(client, "site"))["last_check"]
    assert (check["error"], check["detail"]) == ("redirect", f"more than {MAX_REDIRECTS} redirects")
    assert upstream.hits["/loop"] == MAX_REDIRECTS + 1  # the request and the redirects followed


async def test_endless_body_is_read_only_up_to_the_cap(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/endless"), timeout=5)]))
    check = (await first_check(client, "site"))["last_check"]
    assert (check["status"], check["error"]) == (200, None)


async def test_slow_target_does_not_delay_the_others(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    targets = [
        target("stuck", upstream.url("/hang"), interval=0.1, timeout=10),
        target("quick", upstream.url("/ok"), interval=0.1),
    ]
    client = await aiohttp_client(make_monitor(targets))
    quick = await eventually(lambda: checks_of(client, "quick"), lambda checks: len(checks) >= 3)
    assert len(quick) >= 3
    assert await checks_of(client, "stuck") == []  # its first check is still waiting for an answer


async def test_targets_are_checked_again_at_their_interval(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"), interval=0.1)]))
    checks = await eventually(lambda: checks_of(client, "site"), lambda checks: len(checks) >= 3)
    assert len(checks) >= 3
    assert upstream.hits["/ok"] >= 3


async def test_closing_the_app_stops_the_checks(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"), interval=0.1)]))
    await eventually(lambda: checks_of(client, "site"), lambda checks: len(checks) >= 2)
    await client.close()
    hits = upstream.hits["/ok"]
    await asyncio.sleep(0.5)  # five intervals
    assert upstream.hits["/ok"] == hits
