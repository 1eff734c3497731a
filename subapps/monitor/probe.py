"""One check of one target with aiohttp's client: the status, the latency, and what went wrong.

Error classes: `timeout`, `refused`, `unreachable` (another connect failure), `dns`, `tls`,
`status` (an answer, but not an expected status), `redirect` (too many, to a URL that is not
http(s), or to another host the target does not allow), `connection` (the connection broke
mid-answer).

Redirects are followed here, one request at a time (`allow_redirects=False`), so a redirect to
a host the target does not allow is never requested. A check's detail is stored and shown: it
never quotes a URL but through `redact`, and never the text of a client exception (aiohttp's
include the URL with its query).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import traceback
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from nestor import redact

from .db import Check
from .targets import Target, shown_host

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
BODY_CAP = 64 * 1024  # bytes of a body read at most: enough to keep a connection, never a download
USER_AGENT = "Nestor-monitor/0.1 (aiohttp)"
logger = logging.getLogger("monitor.probe")


def new_session(limit: int) -> aiohttp.ClientSession:
    """Return the monitor's client session: at most `limit` connections, no cookies, no proxy from env."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )


async def probe(session: aiohttp.ClientSession, target: Target) -> Check:
    """Request the target once (GET, redirects followed up to a limit) and return the unsaved check."""
    checked_at = datetime.now(UTC)
    start = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=target.timeout)
    status, url = None, target.url
    try:
        # The outer bound also covers reading the body, which the client's timeout may not.
        async with asyncio.timeout(target.timeout):
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
                    status, location = resp.status, resp.headers.get("Location")
                    if status not in REDIRECTS or location is None:
                        await read_capped(resp.content, BODY_CAP)
                        break
                url = next_url(target, url, location)
            else:
                raise Redirect(f"more than {MAX_REDIRECTS} redirects")
    except Exception as e:  # CancelledError is a BaseException: shutdown still stops a check
        latency = round((time.perf_counter() - start) * 1000, 2) if status is not None else None
        error, detail = classify(e, target, url)
        return Check(target.name, checked_at, status, latency, error, detail)
    latency = round((time.perf_counter() - start) * 1000, 2)
    if status not in target.expect_status:
        expected = " or ".join(map(str, target.expect_status))
        return Check(target.name, checked_at, status, latency, "status", f"expected {expected}, got {status}")
    return Check(target.name, checked_at, status, latency, None)


class Redirect(Exception):
    """A redirect the check does not follow; the message says why."""


def next_url(target: Target, url: URL, location: str) -> URL:
    """Return the URL a redirect from `url` leads to; raise Redirect unless the target may follow it."""
    try:
        # As aiohttp reads a Location: requoted, and resolved against the URL that answered.
        redirect = url.join(URL(location, encoded=False))
    except ValueError:
        raise Redirect("redirected to an invalid URL") from None
    if redirect.scheme not in ("http", "https"):
        # Only a URL with an authority (scheme://) has parts `redact` knows: others show their scheme.
        shown = redact(location)[:100] if "://" in location else f"{redirect.scheme}:…"
        raise Redirect(f"redirected to {shown!r}, which is not an http(s) URL: not followed")
    if not redirect.host:
        raise Redirect("redirected to an invalid URL")
    if not target.may_redirect_to(redirect):
        raise Redirect(f"redirected to another host: {shown_host(redirect)} (not followed: see follow_redirects_to)")
    if url.user is not None and redirect.user is None and redirect.origin() == url.origin():
        # As aiohttp does: the credentials of a URL go along to its own origin, never elsewhere.
        redirect = redirect.with_user(url.user).with_password(url.password)
    return redirect


async def read_capped(content: aiohttp.StreamReader, cap: int) -> int:
    """Read at most `cap` bytes of a body and return how many were read; the rest stays unread."""
    size = 0
    while size < cap:
        chunk = await content.read(cap - size)
        if not chunk:
            break
        size += len(chunk)
    return size


def classify(exc: Exception, target: Target, url: URL) -> tuple[str, str]:
    """Return the error class of a failed request of `url` and a sentence saying what happened."""
    host = f"{url.host_subcomponent}:{url.port}"
    if isinstance(exc, Redirect):
        return "redirect", str(exc)
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return "timeout", f"no answer within {target.timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns", f"the name {url.host} does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return "tls", f"the certificate of {host} is not valid: {reason}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls", f"TLS with {host} failed: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "refused", f"{host} refused the connection"
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return "unreachable", f"cannot connect to {host}: {reason}"
    if isinstance(exc, aiohttp.ClientError):
        return "connection", f"the connection failed: {type(exc).__name__}"
    # The exception's text may hold the URL with its query: logged with its URLs redacted.
    logger.warning(
        "check of %s failed unexpectedly: %s: %s\n%s",
        target.name,
        type(exc).__name__,
        scrub(str(exc)),
        "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
    )
    return "connection", f"the check failed: {type(exc).__name__}"


def scrub(text: str) -> str:
    """Return `text` with every URL in it redacted (its password and secret query values `***`)."""
    return URL_IN_TEXT.sub(lambda m: str(redact(m.group(0))), text)
