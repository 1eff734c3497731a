"""Monitor storage: the last checks of each target and its state changes (monitor's own MetaData).

Knows nothing of HTTP. Every function takes the kernel's `AsyncEngine` (SQLite or
PostgreSQL). Times are stored in UTC; SQLite keeps no time zone, so it is put back on read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MAX_NAME, MAX_ERROR, MAX_DETAIL = 63, 20, 200
KEEP_CHANGES = 500  # state changes kept per target
HOUR, DAY = timedelta(hours=1), timedelta(days=1)

# Checks are written forever (and pruned): a 64-bit id on PostgreSQL; SQLite's INTEGER is 64-bit.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()
checks = sa.Table(
    "monitor_check",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("target", sa.String(MAX_NAME), nullable=False),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("error", sa.String(MAX_ERROR), nullable=True),
    sa.Column("detail", sa.String(MAX_DETAIL), nullable=False),
    sa.Index("monitor_check_target_id", "target", "id"),
)
changes = sa.Table(
    "monitor_change",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("target", sa.String(MAX_NAME), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("previous", sa.String(10), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("error", sa.String(MAX_ERROR), nullable=True),
    sa.Column("detail", sa.String(MAX_DETAIL), nullable=False),
    sa.Index("monitor_change_target_id", "target", "id"),
)


@dataclass(frozen=True)
class Check:
    """One check of a target: `error` is None when it was up, else its class (`timeout`, `status`, …)."""

    target: str
    checked_at: datetime
    status: int | None
    latency_ms: float | None
    error: str | None
    detail: str = ""
    id: int = 0  # 0 until stored

    @property
    def ok(self) -> bool:
        """True when the target answered as expected."""
        return self.error is None

    @property
    def state(self) -> str:
        """`up` or `down`."""
        return "up" if self.ok else "down"

    @classmethod
    def from_dict(cls, target: str, data: dict[str, Any]) -> Check:
        """Return the check `as_dict` gave (as a bus message carries it)."""
        return cls(
            target,
            datetime.fromisoformat(data["checked_at"]),
            data["status"],
            data["latency_ms"],
            data["error"],
            data["detail"],
            data["id"],
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the check as JSON."""
        return {
            "id": self.id,
            "checked_at": self.checked_at.isoformat(),
            "ok": self.ok,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Change:
    """A target went from one state to another (`up` → `down` or `down` → `up`)."""

    target: str
    changed_at: datetime
    previous: str
    state: str
    error: str | None
    detail: str
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the change as JSON."""
        return {
            "id": self.id,
            "target": self.target,
            "changed_at": self.changed_at.isoformat(),
            "from": self.previous,
            "to": self.state,
            "error": self.error,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Uptime:
    """Percent of checks that were up over the last hour and day; None without checks."""

    hour: float | None = None
    day: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """Return the percentages as JSON."""
        return {"hour": self.hour, "day": self.day}


async def record_check(engine: AsyncEngine, check: Check, keep: int) -> Check:
    """Store a check, delete the target's checks past the newest `keep`, and return it with its id."""
    values = {
        "target": check.target,
        "checked_at": check.checked_at,
        "ok": check.ok,
        "status": check.status,
        "latency_ms": check.latency_ms,
        "error": check.error,
        "detail": check.detail[:MAX_DETAIL],
    }
    async with engine.begin() as conn:
        result = await conn.execute(checks.insert().values(values))
        await _prune(conn, checks, check.target, keep)
    return replace(check, detail=values["detail"], id=result.inserted_primary_key[0])


async def record_change(engine: AsyncEngine, change: Change) -> Change:
    """Store a state change (the newest KEEP_CHANGES are kept) and return it with its id."""
    values = {
        "target": change.target,
        "changed_at": change.changed_at,
        "previous": change.previous,
        "state": change.state,
        "error": change.error,
        "detail": change.detail[:MAX_DETAIL],
    }
    async with engine.begin() as conn:
        result = await conn.execute(changes.insert().values(values))
        await _prune(conn, changes, change.target, KEEP_CHANGES)
    return replace(change, detail=values["detail"], id=result.inserted_primary_key[0])


async def _prune(conn: AsyncConnection, table: sa.Table, target: str, keep: int) -> None:
    # Ids only grow, so the (keep+1)-th newest id and all below it are the rows to drop.
    cutoff = (
        sa.select(table.c.id)
        .where(table.c.target == target)
        .order_by(table.c.id.desc())
        .offset(keep)
        .limit(1)
        .scalar_subquery()
    )
    await conn.execute(table.delete().where(table.c.target == target, table.c.id <= cutoff))


async def forget_removed(engine: AsyncEngine, configured: Sequence[str], idle: timedelta = DAY) -> list[str]:
    """Delete the checks and changes of targets no longer configured and checked for `idle`;
    return their names. A target gone for less (a deploy that briefly lacked it) keeps its history."""
    since = datetime.now(UTC) - idle
    others = sa.select(checks.c.target, sa.func.max(checks.c.checked_at).label("last")).group_by(checks.c.target)
    if configured:
        others = others.where(checks.c.target.not_in(list(configured)))
    async with engine.begin() as conn:
        gone = [row.target for row in await conn.execute(others) if _utc(row.last) < since]
        if gone:
            await conn.execute(checks.delete().where(checks.c.target.in_(gone)))
            await conn.execute(changes.delete().where(changes.c.target.in_(gone)))
    return gone


async def recent_checks(engine: AsyncEngine, target: str, limit: int) -> list[Check]:
    """Return a target's newest checks, newest first."""
    query = sa.select(checks).where(checks.c.target == target).order_by(checks.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_check(row) for row in await conn.execute(query)]


async def latest_checks(engine: AsyncEngine, targets: Sequence[str]) -> dict[str, Check]:
    """Return the newest check of each of `targets` that has one."""
    if not targets:
        return {}
    newest = sa.select(sa.func.max(checks.c.id)).where(checks.c.target.in_(targets)).group_by(checks.c.target)
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(checks).where(checks.c.id.in_(newest)))
        return {row.target: _check(row) for row in rows}


async def recent_changes(engine: AsyncEngine, targets: Sequence[str], limit: int) -> list[Change]:
    """Return the newest state changes of `targets`, newest first."""
    if not targets:
        return []
    query = (
        sa.select(changes).where(changes.c.target.in_(targets)).order_by(changes.c.id.desc()).limit(limit)
    )
    async with engine.connect() as conn:
        return [_change(row) for row in await conn.execute(query)]


async def uptime(engine: AsyncEngine, targets: Sequence[str], now: datetime) -> dict[str, Uptime]:
    """Return each target's uptime over the hour and the day before `now`, from the stored checks."""
    if not targets:
        return {}
    in_hour = checks.c.checked_at >= now - HOUR
    query = (
        sa.select(
            checks.c.target,
            sa.func.count().label("day_total"),
            sa.func.sum(sa.case((checks.c.ok, 1), else_=0)).label("day_up"),
            sa.func.sum(sa.case((in_hour, 1), else_=0)).label("hour_total"),
            sa.func.sum(sa.case((sa.and_(in_hour, checks.c.ok), 1), else_=0)).label("hour_up"),
        )
        .where(checks.c.target.in_(targets), checks.c.checked_at >= now - DAY)
        .group_by(checks.c.target)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {
        row.target: Uptime(_percent(row.hour_up, row.hour_total), _percent(row.day_up, row.day_total))
        for row in rows
    }


async def ping(engine: AsyncEngine) -> None:
    """Read the checks table once; raise if it cannot be read."""
    async with engine.connect() as conn:
        await conn.execute(sa.select(checks.c.id).limit(1))


async def count_checks(engine: AsyncEngine, target: str) -> int:
    """Return how many checks of a target are stored."""
    query = sa.select(sa.func.count()).select_from(checks).where(checks.c.target == target)
    async with engine.connect() as conn:
        return (await conn.scalar(query)) or 0


def _percent(up: int | None, total: int | None) -> float | None:
    return round(100 * (up or 0) / total, 2) if total else None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check(row: sa.Row) -> Check:
    return Check(row.target, _utc(row.checked_at), row.status, row.latency_ms, row.error, row.detail, row.id)


def _change(row: sa.Row) -> Change:
    return Change(row.target, _utc(row.changed_at), row.previous, row.state, row.error, row.detail, row.id)
