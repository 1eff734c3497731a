"""Logins through a form, kept server-side so that logging out ends them everywhere.

The session cookie carries the login's id; the row in `nestor_login` says it is live. Logout
deletes the row, so a copy of the cookie taken before (another tab, a stolen cookie) stops
working at once; a login also ends after LOGIN_MAX_AGE. The kernel migrates this table like a
sub-app's (`nestor db status` lists it as `nestor`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

LOGIN_MAX_AGE = 12 * 3600  # seconds a login through the form lasts

metadata = sa.MetaData()
login_table = sa.Table(
    "nestor_login",
    metadata,
    sa.Column("id", sa.String(43), primary_key=True),  # secrets.token_urlsafe(32)
    sa.Column("setting", sa.String(63), nullable=False),  # the token it proved: admin_token
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
)


async def start(engine: AsyncEngine, setting: str) -> str:
    """Record a new login for `setting` and return its id; logins past their age are deleted meanwhile."""
    login_id = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(login_table.delete().where(login_table.c.started_at < now - timedelta(seconds=LOGIN_MAX_AGE)))
        await conn.execute(login_table.insert().values(id=login_id, setting=setting, started_at=now))
    return login_id


async def alive(engine: AsyncEngine, login_id: str, setting: str) -> bool:
    """True while the login exists (not logged out) and is younger than LOGIN_MAX_AGE."""
    since = datetime.now(UTC) - timedelta(seconds=LOGIN_MAX_AGE)
    query = sa.select(sa.literal(1)).where(
        login_table.c.id == login_id, login_table.c.setting == setting, login_table.c.started_at >= since
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).first() is not None


async def end(engine: AsyncEngine, login_id: str) -> None:
    """Log out: the login stops working for every copy of its cookie."""
    async with engine.begin() as conn:
        await conn.execute(login_table.delete().where(login_table.c.id == login_id))
