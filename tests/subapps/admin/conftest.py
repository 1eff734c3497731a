"""Admin fixtures: Nestor with the sample tree and the admin, and a client that logs in."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import subapps.admin

from ...conftest import MakeApp
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
        return make_app(tables, specs=[*sample_specs(), *specs, subapps.admin.subapp])

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
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
