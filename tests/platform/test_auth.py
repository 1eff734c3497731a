"""`require_token`: a bearer token per level, open or hidden while unset."""

from __future__ import annotations

import pytest
from pytest_aiohttp import AiohttpClient

from nestor import require_token

from ..conftest import MakeApp
from ..fixtures.req_token import hidden_spec
from ..fixtures.tree import API_TOKEN

FORMATS = [("html", "text/html"), ("json", "application/problem+json")]  # error_format, content type


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic czNjcmV0", 401),
        ("Bearer ", 401),
        ("Bearer wrong", 403),
        ("Bearer s3cre", 403),
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
    ],
)
async def test_token_protected_app_checks_bearer_token(
    aiohttp_client: AiohttpClient, make_app: MakeApp, authorization: str | None, status: int
) -> None:
    client = await aiohttp_client(make_app({"b": {"api_token": "s3cret"}}))
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with client.get("/b/", headers=headers) as resp:
        assert resp.status == status


@pytest.mark.parametrize(("error_format", "content_type"), FORMATS)
async def test_missing_token_is_401_with_challenge_in_levels_format(
    aiohttp_client: AiohttpClient, make_app: MakeApp, error_format: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app({"b": {"api_token": "s3cret", "error_format": error_format}}))
    async with client.get("/b/") as resp:
        assert resp.status == 401
        assert resp.content_type == content_type
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert "Authorization: Bearer" in await resp.text()


@pytest.mark.parametrize(("error_format", "content_type"), FORMATS)
async def test_wrong_token_is_403_in_levels_format(
    aiohttp_client: AiohttpClient, make_app: MakeApp, error_format: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app({"b": {"api_token": "s3cret", "error_format": error_format}}))
    async with client.get("/b/", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 403
        assert resp.content_type == content_type
        assert "s3cret" not in await resp.text()


async def test_token_setting_unset_leaves_app_open(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/b/") as resp:
        assert resp.status == 200


async def test_token_is_read_from_the_nearest_level(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app({"nestor": {"api_token": "root-token"}}))
    async with client.get("/b/", headers={"Authorization": "Bearer root-token"}) as resp:
        assert resp.status == 200
    async with client.get("/b/") as resp:
        assert resp.status == 401


async def test_hidden_app_is_404_while_token_unset(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(specs=[hidden_spec()]))
    async with client.get("/hidden/") as resp:
        assert resp.status == 404


async def test_hidden_app_opens_with_its_token(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app({"hidden": {"hidden_token": "t0k"}}, specs=[hidden_spec()]))
    async with client.get("/hidden/", headers={"Authorization": "Bearer t0k"}) as resp:
        assert resp.status == 200
        assert await resp.text() == "behind the token"


def test_require_token_refuses_unknown_when_unset() -> None:
    with pytest.raises(ValueError, match="when_unset must be 'open' or 'hidden'"):
        require_token(API_TOKEN, when_unset="closed")


# -- production mode ---------------------------------------------------------------------------
