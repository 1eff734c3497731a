"""The monitored targets: checked from the `targets` setting, or Nestor's own /health.

A target is a table `{name, url, interval, timeout, expect_status, follow_redirects_to}`; only
`name` and `url` are required. The validator runs at start-up through the kernel's
`Setting(validate=...)`: its ValueError names the target and the field, and the kernel adds the
file, table and key. A URL is quoted only through `redact` (the messages reach the terminal and
the logs), so its password and secret query parameters show as `***`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

from nestor import redact

FIELDS = ("name", "url", "interval", "timeout", "expect_status", "follow_redirects_to")
DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_STATUS = 30.0, 10.0, 200
INTERVALS = (0.1, 86400.0)  # seconds, smallest and largest
TIMEOUTS = (0.01, 300.0)
MAX_NAME, MAX_URL = 63, 2000
MAX_HOSTS = 100  # entries of follow_redirects_to
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
    follow_redirects_to: tuple[str, ...] = ()  # other hosts ("host" or "host:port") redirects may reach

    @property
    def shown_url(self) -> str:
        """The URL as pages, the API and the logs show it: its password and secret query values hidden."""
        return str(redact(str(self.url)))

    def may_redirect_to(self, url: URL) -> bool:
        """Whether a redirect to `url` may be followed: the target's own host, or one it allows.

        Its own host means the same host and port, or https on the same host (an upgrade from
        http); an allowed `host` means that host on its scheme's default port, `host:port` that port.
        """
        if url.scheme not in ("http", "https") or not url.host:
            return False
        own = self.url
        if url.host == own.host and (url.port == own.port or (own.scheme, url.scheme) == ("http", "https")):
            return True
        return any(_allows(entry, url) for entry in self.follow_redirects_to)

    def as_dict(self) -> dict[str, Any]:
        """Return the target's configuration as JSON."""
        return {
            "name": self.name,
            "url": self.shown_url,
            "interval": self.interval,
            "timeout": self.timeout,
            "expect_status": list(self.expect_status),
            "follow_redirects_to": list(self.follow_redirects_to),
        }


def shown_host(url: URL) -> str:
    """Return `host`, or `host:port` when the port is not the scheme's default (IPv6 in brackets)."""
    return url.host_port_subcomponent or ""


def _allows(entry: str, url: URL) -> bool:
    allowed = URL(f"http://{entry}")
    if allowed.host != url.host:
        return False
    return url.port == allowed.explicit_port if allowed.explicit_port is not None else url.is_default_port()


def validate_targets(value: list[Any]) -> list[dict[str, Any]]:
    """Return the `targets` setting with defaults filled in; raise ValueError naming target and field."""
    clean: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"targets[{index}]"
        if not isinstance(item, dict):
            raise ValueError(
                f"{where} must be a table like {{name = \"site\", url = \"https://example.org/\"}}, "
                f"got {type(item).__name__} {redact(item)!r}"
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
        "follow_redirects_to": _hosts(item.get("follow_redirects_to", []), label),
    }


def _url(raw: object, label: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{label}: url is required, e.g. url = \"https://example.org/health\"")
    if len(raw) > MAX_URL:
        raise ValueError(f"{label}: url is longer than {MAX_URL} characters")
    try:
        url = URL(raw.strip())
    except ValueError as e:
        # Not a URL, so `redact` cannot find its parts: the text is not repeated at all.
        raise ValueError(f"{label}: url is not a valid URL: {e}") from None
    shown = redact(str(url))
    if url.scheme not in ("http", "https"):
        raise ValueError(f"{label}: url {shown!r} must be an http:// or https:// URL")
    if not url.host:
        raise ValueError(f"{label}: url {shown!r} has no host")
    return str(url)


def _hosts(raw: object, label: str) -> list[str]:
    example = 'e.g. follow_redirects_to = ["example.net", "127.0.0.1:8080"]'
    if not isinstance(raw, list) or len(raw) > MAX_HOSTS:
        raise ValueError(
            f"{label}: follow_redirects_to must be a list of at most {MAX_HOSTS} hosts, {example}; got {redact(raw)!r}"
        )
    return list(dict.fromkeys(_host(entry, label, example) for entry in raw))


def _host(entry: object, label: str, example: str) -> str:
    problem = f"{label}: follow_redirects_to entry {redact(entry)!r} is not a host or host:port ({example})"
    if not isinstance(entry, str) or not entry.strip() or any(c in entry for c in "/?#@\\ "):
        raise ValueError(problem)
    try:
        url = URL(f"http://{entry.strip()}")
    except ValueError:
        raise ValueError(problem) from None
    if not url.host or url.path not in ("", "/"):
        raise ValueError(problem)
    port = url.explicit_port
    return f"{url.host_subcomponent}:{port}" if port is not None else str(url.host_subcomponent)


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
            follow_redirects_to=tuple(item.get("follow_redirects_to", ())),
        )
        for item in configured
    ]


def self_target(server: URL) -> Target:
    """Return the default target: this server's own /health, at the URL it is served at."""
    return Target(name=SELF_NAME, url=server.with_path("/health"))
