"""One check of one target with aiohttp's client: the status, the latency, and what went wrong.

Error classes: `timeout`, `refused`, `unreachable` (another connect failure), `dns`, `tls`,
`status` (an answer, but not an expected status), `redirect` (too many, or to a URL that
is not http(s)), `connection` (the connection broke mid-answer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import aiohttp

from .db import Check
from .targets import Target

MAX_REDIRECTS = 5
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
    status = None
    try:
        # The outer bound also covers reading the body, which the client's timeout may not.
        async with asyncio.timeout(target.timeout):
            # aiohttp counts the redirect it refuses: N follows N - 1 of them.
            async with session.get(target.url, timeout=timeout, max_redirects=MAX_REDIRECTS + 1) as resp:
                status = resp.status
                await read_capped(resp.content, BODY_CAP)
    except Exception as e:  # CancelledError is a BaseException: shutdown still stops a check
        latency = round((time.perf_counter() - start) * 1000, 2) if status is not None else None
        error, detail = classify(e, target)
        return Check(target.name, checked_at, status, latency, error, detail)
    latency = round((time.perf_counter() - start) * 1000, 2)
    if status not in target.expect_status:
        expected = " or ".join(map(str, target.expect_status))
        return Check(target.name, checked_at, status, latency, "status", f"expected {expected}, got {status}")
    return Check(target.name, checked_at, status, latency, None)


async def read_capped(content: aiohttp.StreamReader, cap: int) -> int:
    """Read at most `cap` bytes of a body and return how many were read; the rest stays unread."""
    size = 0
    while size < cap:
        chunk = await content.read(cap - size)
        if not chunk:
            break
        size += len(chunk)
    return size


def classify(exc: Exception, target: Target) -> tuple[str, str]:
    """Return the error class of a failed request and a sentence saying what happened."""
    host = f"{target.url.host}:{target.url.port}"
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return "timeout", f"no answer within {target.timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns", f"the name {target.url.host} does not resolve"
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
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "redirect", f"more than {MAX_REDIRECTS} redirects"
    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        location = str(exc.args[0])[:100] if exc.args else "?"
        return "redirect", f"redirected to {location!r}, which is not an http(s) URL: not followed"
    if isinstance(exc, aiohttp.RedirectClientError):
        return "redirect", "redirected to an invalid URL"
    if isinstance(exc, aiohttp.ClientError):
        return "connection", f"the connection failed: {type(exc).__name__}"
    logger.warning("check of %s failed unexpectedly", target.name, exc_info=exc)
    return "connection", f"the check failed: {type(exc).__name__}"
