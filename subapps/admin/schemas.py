"""What the admin answers as JSON (`Accept: application/json`): the same data as its pages."""

from typing import Any

import msgspec


class Readiness(msgspec.Struct, omit_defaults=True):
    ready: bool
    error: str | None = None


class LevelRow(msgspec.Struct):
    """One mounted app: its readiness (null: no check) and the responses it has started."""

    level: str
    title: str
    prefix: str
    parent: str | None
    depth: int
    ready: Readiness | None
    requests: int | None


class Overview(msgspec.Struct):
    mode: str
    checks: dict[str, Readiness]
    levels: list[LevelRow]
    warnings: list[str]


class Value(msgspec.Struct):
    """An effective setting: secrets show as ***."""

    name: str
    value: Any
    source: str
    secret: bool


class LevelConfig(msgspec.Struct):
    level: str
    prefix: str
    values: list[Value]


class Route(msgspec.Struct):
    method: str
    path: str
    name: str | None
    handler: str
    source: str | None
    apps: list[str]
    middlewares: list[str]
