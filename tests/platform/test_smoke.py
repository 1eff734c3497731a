from pytest_aiohttp import AiohttpClient

from ..conftest import MakeApp


async def test_three_levels_see_their_own_page_size(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app({"nestor": {"page_size": 20}, "a": {"page_size": 10, "api": {"page_size": 50}}}))
    for path, size in [("/a/", 10), ("/a/api/", 50), ("/b/", 20)]:
        async with client.get(path) as resp:
            assert resp.status == 200
            assert (await resp.json())["page_size"] == size
