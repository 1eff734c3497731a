"""The monitor API's declared types: its query and what its answers look like."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

MAX_LIMIT = 1000  # the most checks one request lists


class ChecksQuery(msgspec.Struct):
    """How many checks, newest first: `limit` defaults to the level's page_size."""

    limit: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None


class Check(msgspec.Struct):
    """One check of a target: `error` is None when it answered as expected."""

    id: int
    checked_at: datetime
    ok: bool
    status: int | None
    latency_ms: float | None
    error: str | None
    detail: str


class Change(msgspec.Struct, rename={"previous": "from", "state": "to"}):
    """A target went up or down."""

    id: int
    target: str
    changed_at: datetime
    previous: Literal["up", "down"]
    state: Literal["up", "down"]
    error: str | None
    detail: str


class Uptime(msgspec.Struct):
    """Percent of checks that were up over the last hour and day; null without checks."""

    hour: float | None
    day: float | None


class Links(msgspec.Struct):
    checks: str
    check: str


class Target(msgspec.Struct):
    """A target's configuration, its state and the links to its checks."""

    name: str
    url: str
    interval: float
    timeout: float
    expect_status: list[int]
    follow_redirects_to: list[str]  # other hosts its redirects may lead to ("host" or "host:port")
    state: Literal["up", "down", "unknown"]
    last_check: Check | None
    uptime: Uptime
    links: Links


class TargetList(msgspec.Struct):
    items: list[Target]


class TargetWithChanges(Target):
    """A target and its recent changes, newest first."""

    changes: list[Change]


class CheckList(msgspec.Struct):
    target: str
    limit: int
    items: list[Check]


class CheckDone(msgspec.Struct):
    """The check just made; its Location lists the target's checks."""

    target: str
    state: Literal["up", "down"]
    check: Check
