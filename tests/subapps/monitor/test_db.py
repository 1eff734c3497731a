"""Monitor storage: its tables at start-up, the newest checks kept per target, uptime per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from pytest_aiohttp import AiohttpClient

from nestor import DB
from nestor_subapps.monitor import db

from .conftest import (
    ON_BOTH_DATABASES,
    BuildMonitor,
    Upstream,
    check_now,
    checks_of,
    closed_port_url,
    eventually,
    first_check,
    status_of,
    target,
)

pytestmark = ON_BOTH_DATABASES


async def test_start_up_creates_the_monitor_tables(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor
) -> None:
    client = await aiohttp_client(make_monitor([target("site", closed_port_url())]))
    async with client.app[DB].connect() as conn:
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert {"monitor_check", "monitor_change"} <= set(names)


async def test_only_the_newest_checks_of_a_target_are_kept(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))], keep_checks=3))
    await first_check(client, "site")
    made = [(await check_now(client, "site"))["check"]["id"] for _ in range(4)]
    assert [c["id"] for c in await checks_of(client, "site")] == list(reversed(made[1:]))  # newest first
    assert await db.count_checks(client.app[DB], "site") == 3


async def test_pruning_one_target_keeps_the_checks_of_the_others(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    targets = [target("busy", upstream.url("/ok")), target("quiet", upstream.url("/ok"))]
    client = await aiohttp_client(make_monitor(targets, keep_checks=2))
    await first_check(client, "busy")
    await first_check(client, "quiet")
    for _ in range(3):
        await check_now(client, "busy")
    assert len(await checks_of(client, "quiet")) == 1


async def test_uptime_counts_the_checks_of_the_last_hour_and_day(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))]))
    await first_check(client, "site")  # up, now
    now, engine = datetime.now(UTC), client.app[DB]
    for ago, error in [
        (timedelta(minutes=10), None),
        (timedelta(minutes=30), "timeout"),
        (timedelta(hours=2), "refused"),
        (timedelta(hours=5), None),
        (timedelta(days=2), "refused"),  # older than a day: not counted
    ]:
        await db.record_check(engine, db.Check("site", now - ago, None, None, error), keep=100)
    uptime = (await status_of(client, "site"))["uptime"]
    assert uptime == {"hour": 66.67, "day": 60.0}  # 2 of 3 checks in the hour, 3 of 5 in the day


async def test_target_never_checked_has_no_uptime(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/hang"), timeout=5)]))
    status = await status_of(client, "site")
    assert (status["state"], status["last_check"], status["uptime"]) == (
        "unknown",
        None,
        {"hour": None, "day": None},
    )


async def test_history_of_targets_removed_for_a_day_is_deleted_when_the_schedule_starts(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    first = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))]))
    await first_check(first, "site")
    now, engine = datetime.now(UTC), first.app[DB]
    for name, ago in [("retired", timedelta(days=2)), ("renamed", timedelta(hours=1))]:
        await db.record_check(engine, db.Check(name, now - ago, None, None, "refused"), keep=100)
        await db.record_change(engine, db.Change(name, now - ago, "up", "down", "refused", "refused"))
    await first.close()
    # The configuration no longer has them: the next schedule forgets the one gone for a day,
    # and keeps the one gone for an hour (a deploy that briefly lacked it keeps its history).
    second = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))]))
    engine = second.app[DB]
    assert await eventually(lambda: db.count_checks(engine, "retired"), lambda n: n == 0) == 0
    assert await db.recent_changes(engine, ["retired"], 10) == []
    assert await db.count_checks(engine, "renamed") == 1
    assert len(await db.recent_changes(engine, ["renamed"], 10)) == 1
    assert await db.count_checks(engine, "site") >= 1
