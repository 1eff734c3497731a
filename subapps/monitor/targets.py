"""The monitored targets: checked from the `targets` setting, or Nestor's own /health.

A target is a table `{name, url, interval, timeout, expect_status}`; only `name` and `url`
are required. The validator runs at start-up through the kernel's `Setting(validate=...)`:
its ValueError names the target and the field, and the kernel adds the file, table and key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

FIELDS = ("name", "url", "interval", "timeout", "expect_status")
DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_STATUS = 30.0, 10.0, 200
INTERVALS = (0.1, 86400.0)  # seconds, smallest and largest
TIMEOUTS = (0.01, 300.0)
MAX_NAME, MAX_URL = 63, 2000
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Paths of the monitor's own routes: a target with one of these names would be unreachable.
RESERVED = frozenset({"api", "ws", "static"})
SELF_NAME = "nestor"


class UnknownTarget(LookupError):
    """No configured target has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"There is no monitored target {name[:MAX_NAME]!r}.")
        self.name = name


@dataclass(frozen=True)
class Target:
    """One HTTP(S) endpoint to check every `interval` seconds."""

    name: str
    url: URL
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    expect_status: tuple[int, ...] = (DEFAULT_STATUS,)

    @property
    def shown_url(self) -> str:
        """The URL as pages and the API show it: a password in it is hidden."""
        return str(self.url.with_password("***") if self.url.password else self.url)

    def as_dict(self) -> dict[str, Any]:
        """Return the target's configuration as JSON."""
        return {
            "name": self.name,
            "url": self.shown_url,
            "interval": self.interval,
            "timeout": self.timeout,
            "expect_status": list(self.expect_status),
        }


def validate_targets(value: list[Any]) -> list[dict[str, Any]]:
    """Return the `targets` setting with defaults filled in; raise ValueError naming target and field."""
    clean: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"targets[{index}]"
        if not isinstance(item, dict):
            raise ValueError(
                f"{where} must be a table like {{name = \"site\", url = \"https://example.org/\"}}, "
                f"got {type(item).__name__} {item!r}"
            )
        target = _validate_one(item, where)
        first = seen.get(target["name"])
        if first is not None:
            raise ValueError(
                f"target {target['name']!r} ({where}): the name is already used by targets[{first}]; "
                "give each target its own name"
            )
        seen[target["name"]] = index
        clean.append(target)
    return clean


def _validate_one(item: dict[str, Any], where: str) -> dict[str, Any]:
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = "missing" if name is None else repr(name)
        raise ValueError(
            f"{where}: name is {shown}; give a name of letters, digits, '_', '.' or '-' "
            f"(at most {MAX_NAME}, starting with a letter or digit)"
        )
    label = f"target {name!r} ({where})"
    if name in RESERVED:
        paths = ", ".join(sorted(RESERVED))
        raise ValueError(f"{label}: name {name!r} is a path of the monitor itself ({paths}); choose another")
    for key in item:
        if key not in FIELDS:
            match = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f" Did you mean {match[0]!r}?" if match else ""
            raise ValueError(f"{label}: unknown field {key!r}.{hint} Fields: {', '.join(FIELDS)}")
    return {
        "name": name,
        "url": _url(item.get("url"), label),
        "interval": _seconds(item.get("interval", DEFAULT_INTERVAL), f"{label}: interval", *INTERVALS),
        "timeout": _seconds(item.get("timeout", DEFAULT_TIMEOUT), f"{label}: timeout", *TIMEOUTS),
        "expect_status": _statuses(item.get("expect_status", DEFAULT_STATUS), label),
    }


def _url(raw: object, label: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{label}: url is required, e.g. url = \"https://example.org/health\"")
    if len(raw) > MAX_URL:
        raise ValueError(f"{label}: url is longer than {MAX_URL} characters")
    try:
        url = URL(raw.strip())
    except ValueError as e:
        raise ValueError(f"{label}: url {raw!r} is not a valid URL: {e}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"{label}: url {raw!r} must be an http:// or https:// URL")
    if not url.host:
        raise ValueError(f"{label}: url {raw!r} has no host")
    return str(url)


def _seconds(raw: object, label: str, minimum: float, maximum: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{label} must be a number of seconds, got {type(raw).__name__} {raw!r}")
    if not minimum <= raw <= maximum:
        raise ValueError(f"{label} must be from {minimum:g} to {maximum:g} seconds, got {raw!r}")
    return float(raw)


def _statuses(raw: object, label: str) -> list[int]:
    codes = raw if isinstance(raw, list) else [raw]
    if not codes or not all(_is_status(code) for code in codes):
        raise ValueError(
            f"{label}: expect_status must be an HTTP status (100-599) or a list of them, got {raw!r}"
        )
    return list(dict.fromkeys(codes))


def _is_status(code: object) -> bool:
    return isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599


def from_setting(configured: Sequence[dict[str, Any]]) -> list[Target]:
    """Return the targets of a validated `targets` setting."""
    return [
        Target(
            name=item["name"],
            url=URL(item["url"]),
            interval=item["interval"],
            timeout=item["timeout"],
            expect_status=tuple(item["expect_status"]),
        )
        for item in configured
    ]


def self_target(server: URL) -> Target:
    """Return the default target: this server's own /health, at the URL it is served at."""
    return Target(name=SELF_NAME, url=server.with_path("/health"))
