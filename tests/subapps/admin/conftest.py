"""Admin fixtures: Nestor with the sample tree and the admin, and a client that logs in."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import nestor_subapps.admin

from ...conftest import MakeApp
from ...fixtures.tls import self_signed
from ...fixtures.tree import sample_specs

TOKEN = "admin-token-for-the-tests-7f3a9c"
PAGES = ["/admin/", "/admin/config", "/admin/routes"]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
Client = TestClient[web.Request, web.Application]
BuildAdmin = Callable[..., web.Application]


@pytest.fixture
def make_admin(make_app: MakeApp) -> BuildAdmin:
    """Return `make_admin(tables=None, token=TOKEN, specs=())`: the sample tree plus the admin.

    `token=""` leaves admin_token unset; `specs` are mounted beside the sample tree.
    """

    def build(
        tables: dict[str, Any] | None = None, token: str = TOKEN, specs: tuple[Any, ...] = ()
    ) -> web.Application:
        tables = {key: dict(value) for key, value in (tables or {}).items()}
        if token:
            tables.setdefault("nestor", {})["admin_token"] = token
        return make_app(tables, specs=[*sample_specs(), *specs, nestor_subapps.admin.subapp])

    return build


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def csrf_token(client: Client, path: str = "/admin/login") -> str:
    """Load a page with a form (which sets the session cookie); return the form's CSRF token."""
    async with client.get(path) as resp:
        assert resp.status in (200, 401)
        match = CSRF.search(await resp.text())
    assert match is not None, f"no csrf_token field on {path}"
    return match.group(1)


async def log_in(client: Client, token: str = TOKEN, next_page: str = "/admin/") -> str:
    """Log in through the form; return where it sends the browser."""
    form = {"csrf_token": await csrf_token(client), "token": token, "next": next_page}
    async with client.post("/admin/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        return resp.headers["Location"]


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A (server, client) TLS context pair for 127.0.0.1, with a self-signed certificate."""
    server, cert_file = self_signed(tmp_path_factory.mktemp("tls"))
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
