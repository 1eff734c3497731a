"""Behind a proxy (`trusted_proxies`): the client's address, scheme and host come from the
Forwarded / X-Forwarded-* headers of trusted peers only; cookies are Secure and HSTS is sent
when the client used https; the access log shows the client. The test client's peer is 127.0.0.1."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from nestor import ConfigError, SubApp
from nestor.logs import AccessLogger

from ..conftest import MakeApp
from .test_logs import access_records

PUBLIC = "https://shop.example"


async def whois(request: web.Request) -> web.Response:
    response = web.json_response(
        {"remote": request.remote, "scheme": request.scheme, "host": request.host, "url": str(request.url)}
    )
    response.set_cookie("seen", "1", httponly=True)
    return response


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", whois, name="index")
    return app


WHOIS = SubApp(name="whois", prefix="/whois", factory=create_app)


@pytest.fixture
def proxied(make_app: MakeApp) -> Any:
    """Return `proxied(trusted, **root)`: an app with the whois sub-app and these trusted proxies."""

    def build(trusted: list[str], **root: Any) -> web.Application:
        return make_app({"nestor": {"trusted_proxies": trusted, **root}}, specs=[WHOIS])

    return build


async def whois_with(client: Any, headers: dict[str, str]) -> tuple[dict[str, Any], web.StreamResponse]:
    async with client.get("/whois/", headers=headers) as resp:
        assert resp.status == 200
        return await resp.json(), resp


XFF = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}


async def test_without_trusted_proxies_forwarded_headers_are_ignored(aiohttp_client: AiohttpClient, proxied: Any) -> None:
    client = await aiohttp_client(proxied([]))
    seen, resp = await whois_with(client, {**XFF, "Forwarded": "for=198.51.100.1;proto=https"})
    assert (seen["remote"], seen["scheme"]) == ("127.0.0.1", "http")
    assert "secure" not in resp.headers["Set-Cookie"].lower()


async def test_a_trusted_proxy_sets_client_scheme_and_host(aiohttp_client: AiohttpClient, proxied: Any) -> None:
    client = await aiohttp_client(proxied(["127.0.0.1"]))
    seen, resp = await whois_with(client, XFF)
    assert seen == {"remote": "203.0.113.7", "scheme": "https", "host": "shop.example", "url": f"{PUBLIC}/whois/"}
    assert "; Secure" in resp.headers["Set-Cookie"]  # the browser talks https to the proxy
    assert "Strict-Transport-Security" not in resp.headers  # development mode


async def test_an_untrusted_peer_cannot_claim_to_be_a_proxy(aiohttp_client: AiohttpClient, proxied: Any) -> None:
    client = await aiohttp_client(proxied(["10.0.0.0/8", "::1"]))  # not 127.0.0.1
    seen, _ = await whois_with(client, XFF)
    assert (seen["remote"], seen["scheme"], seen["host"]) == ("127.0.0.1", "http", f"127.0.0.1:{client.port}")


async def test_the_client_is_the_first_untrusted_address_from_the_right(
    aiohttp_client: AiohttpClient, proxied: Any
) -> None:
    client = await aiohttp_client(proxied(["127.0.0.1", "10.0.0.0/8"]))
    # The client wrote 1.2.3.4 itself; the edge proxy appended the address it saw, then an inner proxy's.
    seen, _ = await whois_with(client, {"X-Forwarded-For": "1.2.3.4, 203.0.113.7, 10.0.0.5"})
    assert seen["remote"] == "203.0.113.7"
    # Both proxies trusted and nothing else: the leftmost address is the best there is.
    seen, _ = await whois_with(client, {"X-Forwarded-For": "10.0.0.9, 10.0.0.5"})
    assert seen["remote"] == "10.0.0.9"


async def test_rfc_7239_forwarded_wins_over_x_forwarded(aiohttp_client: AiohttpClient, proxied: Any) -> None:
    client = await aiohttp_client(proxied(["127.0.0.1"]))
    forwarded = 'for="[2001:db8::1]:4711";proto=https;host=shop.example, for=127.0.0.1;proto=http'
    seen, resp = await whois_with(client, {"Forwarded": forwarded, "X-Forwarded-For": "198.51.100.1"})
    assert (seen["remote"], seen["scheme"], seen["host"]) == ("2001:db8::1", "https", "shop.example")
    assert "; Secure" in resp.headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "gopher"}, ("203.0.113.7", "http")),
        ({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "evil host/x"}, ("203.0.113.7", "http")),
        ({"Forwarded": "for=_hidden;proto=https"}, ("_hidden", "https")),
        ({"Forwarded": "proto=https"}, ("127.0.0.1", "https")),
    ],
)
async def test_values_a_proxy_cannot_mean_are_not_taken(
    aiohttp_client: AiohttpClient, proxied: Any, headers: dict[str, str], expected: tuple[str, str]
) -> None:
    client = await aiohttp_client(proxied(["127.0.0.1"]))
    seen, _ = await whois_with(client, headers)
    assert (seen["remote"], seen["scheme"]) == expected
    assert seen["host"] == f"127.0.0.1:{client.port}"  # a host that is not a host is not taken


async def test_production_over_https_sends_hsts(aiohttp_client: AiohttpClient, proxied: Any) -> None:
    client = await aiohttp_client(proxied(["127.0.0.1"], mode="production", secret_key="k" * 40, admin_token="t" * 40))
    _, resp = await whois_with(client, XFF)
    assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
    _, resp = await whois_with(client, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in resp.headers  # browsers ignore it over http anyway


async def test_the_access_log_shows_the_client(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, proxied: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await aiohttp_client(await aiohttp_server(proxied(["127.0.0.1"]), access_log_class=AccessLogger))
    await whois_with(client, XFF)
    [record] = await access_records(caplog, 1)
    assert record.getMessage().startswith('203.0.113.7 "GET /whois/"')


def test_a_proxy_that_is_not_an_address_is_refused(proxied: Any) -> None:
    with pytest.raises(ConfigError, match=r"'proxy\.local' is not an IP address or network"):
        proxied(["proxy.local"])
