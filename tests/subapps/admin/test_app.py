"""Who gets into /admin: no token configured (404), no token, a wrong one, the right one, the login form."""

from __future__ import annotations

import ssl

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from nestor import auth

from .conftest import PAGES, TOKEN, BuildAdmin, bearer, csrf_token, log_in

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
JSON = {"Accept": "application/json"}


# -- no token configured: disabled, never open -------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "/admin/login", "/admin/nope"])
@pytest.mark.parametrize(
    "headers", [{}, bearer(), bearer(""), HTML, JSON], ids=["none", "some-token", "empty", "html", "json"]
)
async def test_admin_is_404_everywhere_while_no_token_is_configured(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str, headers: dict[str, str]
) -> None:
    client = await aiohttp_client(make_admin(token=""))
    async with client.get(path, headers=headers) as resp:
        assert resp.status == 404
        assert "csrf_token" not in await resp.text()  # not even the login form


# -- bearer tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
async def test_browser_without_token_gets_the_login_page_with_401(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str
) -> None:
    client = await aiohttp_client(make_admin())
    async with client.get(path, headers=HTML) as resp:
        assert resp.status == 401
        assert resp.content_type == "text/html"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        page = await resp.text()
    assert 'id="login-form"' in page
    assert f'name="next" value="{path}"' in page


@pytest.mark.parametrize("path", PAGES)
async def test_json_client_without_token_gets_a_401_problem(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str
) -> None:
    client = await aiohttp_client(make_admin())
    async with client.get(path, headers=JSON) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        problem = await resp.json()
    assert problem["status"] == 401
    assert problem["instance"] == path


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("token", ["wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()])
async def test_wrong_bearer_token_is_403(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str, token: str
) -> None:
    client = await aiohttp_client(make_admin())
    async with client.get(path, headers={**JSON, **bearer(token)}) as resp:
        assert resp.status == 403
        assert TOKEN not in await resp.text()


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
async def test_right_bearer_token_opens_every_page(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str, accept: dict[str, str]
) -> None:
    client = await aiohttp_client(make_admin())
    async with client.get(path, headers={**accept, **bearer()}) as resp:
        assert resp.status == 200
        assert resp.content_type == ("text/html" if accept is HTML else "application/json")


async def test_admin_token_does_not_open_apps_guarded_by_another_token(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin({"b": {"api_token": "b-token"}}))
    async with client.get("/b/", headers=bearer()) as resp:
        assert resp.status == 403


# -- the login form ------------------------------------------------------------------------------


async def test_login_form_sets_an_httponly_samesite_lax_session_cookie(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin())
    form = {"csrf_token": await csrf_token(client), "token": TOKEN, "next": "/admin/config"}
    async with client.post("/admin/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/admin/config"
        [cookie] = resp.headers.getall("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite"} <= attributes
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in attributes  # served over plain http: a Secure cookie would never come back
    assert TOKEN not in cookie


@pytest.mark.parametrize("path", PAGES)
async def test_logged_in_browser_sees_every_page(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str
) -> None:
    client = await aiohttp_client(make_admin())
    await log_in(client)
    async with client.get(path, headers=HTML) as resp:
        assert resp.status == 200
        assert 'id="login-form"' not in await resp.text()


async def test_login_returns_to_the_page_first_asked_for(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin())
    token = await csrf_token(client, "/admin/routes")  # the 401 login page carries next=/admin/routes
    async with client.get("/admin/routes", headers=HTML) as resp:
        assert resp.status == 401
        assert 'name="next" value="/admin/routes"' in await resp.text()
    form = {"csrf_token": token, "token": TOKEN, "next": "/admin/routes"}
    async with client.post("/admin/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/admin/routes"


@pytest.mark.parametrize("token", ["", "wrong", TOKEN[:-1], TOKEN + " "])
async def test_wrong_token_on_the_form_is_403_and_logs_nobody_in(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, token: str
) -> None:
    client = await aiohttp_client(make_admin())
    form = {"csrf_token": await csrf_token(client), "token": token}
    async with client.post("/admin/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 403
        assert 'id="login-error"' in await resp.text()
    async with client.get("/admin/", headers=HTML) as resp:
        assert resp.status == 401


async def test_login_without_csrf_token_is_refused(aiohttp_client: AiohttpClient, make_admin: BuildAdmin) -> None:
    client = await aiohttp_client(make_admin())
    await csrf_token(client)  # a session exists, but the form does not carry its token
    async with client.post("/admin/login", data={"token": TOKEN}, allow_redirects=False) as resp:
        assert resp.status == 403
    async with client.get("/admin/", headers=HTML) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(
    "next_page",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "",
        "admin/",
    ],
)
async def test_login_never_redirects_off_the_site(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, next_page: str
) -> None:
    client = await aiohttp_client(make_admin())
    assert await log_in(client, next_page=next_page) == "/admin/"


async def test_logout_ends_the_login(aiohttp_client: AiohttpClient, make_admin: BuildAdmin) -> None:
    client = await aiohttp_client(make_admin())
    await log_in(client)
    token = await csrf_token(client, "/admin/")  # the logout form on an admin page
    async with client.post("/admin/logout", data={"csrf_token": token}, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/admin/login"
    async with client.get("/admin/", headers=HTML) as resp:
        assert resp.status == 401


async def test_form_login_expires(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(make_admin())
    await log_in(client)
    monkeypatch.setattr(auth, "LOGIN_MAX_AGE", -1)  # every login is now older than allowed
    async with client.get("/admin/", headers=HTML) as resp:
        assert resp.status == 401


async def test_changing_the_token_ends_form_logins(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    secret = {"secret_key": "one key for both servers, long enough to be safe"}
    before = await aiohttp_client(make_admin({"nestor": secret}))
    await log_in(before)
    jar = before.session.cookie_jar.filter_cookies(before.make_url("/"))
    cookies = {name: morsel.value for name, morsel in jar.items()}
    after = await aiohttp_client(make_admin({"nestor": secret}, token="a-new-token-after-rotation"))
    async with after.get("/admin/", headers=HTML, cookies=cookies) as resp:
        assert resp.status == 401
    async with before.get("/admin/", headers=HTML) as resp:
        assert resp.status == 200  # the same cookie still works where the token is unchanged


async def test_session_cookie_is_secure_over_https(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    make_admin: BuildAdmin,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_tls, client_tls = tls
    client = await aiohttp_client(await aiohttp_server(make_admin(), ssl=server_tls))
    async with client.get("/admin/login", ssl=client_tls) as resp:
        assert resp.status == 200
        [cookie] = resp.headers.getall("Set-Cookie")
        token = await resp.text()
    assert "secure" in {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "csrf_token" in token
