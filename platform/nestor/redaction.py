"""What may be shown of a value: secrets as `***`, wherever they sit in it.

Every page and command that shows configuration goes through `redact` (by way of
`Setting.show`), and so do sub-apps showing values that may carry secrets (the monitor's
target URLs). A URL keeps everything but its password and its secret query parameters, so
what is shown still says where it points.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from yarl import URL

# Names that are secret wherever they appear: a URL's query parameter or a table's field.
# Compared in lower case, also as the end of a longer name (`github_token`, `x-api-key`).
SECRET_NAMES = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "api-key", "key", "auth",
                "authorization", "signature", "sig", "credential", "credentials")
HIDDEN = "***"


def redact(value: Any, secret_parts: Iterable[str] = ()) -> Any:
    """Return `value` as it may be shown: every secret part replaced by `***`.

    Goes through lists and tables (dicts). A URL (any string with `://`) loses its password
    and the values of its secret query parameters; a table, the values of its secret fields.
    A part is secret when its name is one of `SECRET_NAMES` (or ends with one after `_` or
    `-`, as `github_token` does), or is listed in `secret_parts` (what a `Setting` declares).
    Everything else is returned unchanged, so `redact(x) == x` means nothing was secret.
    """
    extra = frozenset(part.lower() for part in secret_parts)
    return _redact(value, extra)


def is_secret_name(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether a query parameter or field called `name` holds a secret (see `redact`)."""
    name = name.lower()
    if name in extra or name in SECRET_NAMES:
        return True
    return any(name.endswith(("_" + word, "-" + word)) for word in SECRET_NAMES)


def _redact(value: Any, extra: frozenset[str]) -> Any:
    if isinstance(value, str):
        return _redact_url(value, extra) if "://" in value else value
    if isinstance(value, Mapping):
        return {
            key: HIDDEN if is_secret_name(str(key), extra) and item not in (None, "") else _redact(item, extra)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(item, extra) for item in value)
    return value


def _redact_url(text: str, extra: frozenset[str]) -> str:
    try:
        url = URL(text)
    except (ValueError, TypeError):
        return text
    if not url.scheme:
        return text
    changed = False
    if url.password:
        url, changed = url.with_password(HIDDEN), True
    if url.query_string and any(is_secret_name(name, extra) for name in url.query):
        url = url.with_query([(name, HIDDEN if is_secret_name(name, extra) else item) for name, item in url.query.items()])
        changed = True
    return str(url) if changed else text


def hide_password(url: str) -> str:
    """Return a URL with its password (as in postgresql://user:pw@host/db) shown as `***`."""
    return _redact_url(url, frozenset())
