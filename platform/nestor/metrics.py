"""Prometheus metrics at `/metrics`: requests, latency, websockets, database pool, bus.

Labels are the serving sub-app, the namespaced route name, the method and the status,
never the raw path, so a scan of a million URLs adds no series. Per request, in the
kernel's one response-prepare handler, the cost is one dict lookup (series are cached by route
object and status), one counter increment and one histogram observation, kept as plain
numbers (the event loop is one thread: prometheus-client's locked values cost three times
as much) and turned into Prometheus families when `/metrics` is scraped. Gauges (open
websockets, pool use, bus counts) are read at scrape time too, never per request.

Each root app has its own registry, so several apps (tests, workers) never share series.
With several worker processes each one reports its own numbers.
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .auth import bearer_matches
from .bus import BUS
from .config import Setting
from .db import DB
from .middleware import REQUEST_START
from .tree import level_of

METRICS_TOKEN = Setting(
    "metrics_token",
    str,
    "",
    secret=True,
    root_only=True,
    help="Bearer token /metrics demands when set (give it to Prometheus as bearer_token); empty: public",
)
UNMATCHED = "<unmatched>"  # the route label of 404s and 405s: aiohttp never names it
OTHER_METHOD = "OTHER"  # any method outside METHODS: clients may send arbitrary ones
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUESTS = "nestor_http_requests"  # exposed as nestor_http_requests_total
LATENCY = "nestor_http_request_duration_seconds"


class Count:
    """One counter series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Timing:
    """One histogram series: how many observations fell in each bucket (the last is +Inf), and their sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total = 0.0


class Metrics(Collector):
    """The request series of one root app, the per-request observation, and the scrape."""

    def __init__(self, root: web.Application) -> None:
        self.counts: dict[tuple[str, str, str, str], Count] = {}  # (subapp, route, method, status)
        self.timings: dict[tuple[str, str, str], Timing] = {}  # (subapp, route, method)
        self.websockets: weakref.WeakKeyDictionary[web.WebSocketResponse, str] = (
            weakref.WeakKeyDictionary()
        )
        # (route, status) -> (Count, Timing); unmatched requests by (app, route, method, status).
        self._series: dict[tuple[Any, ...], tuple[Count, Timing]] = {}
        self._root = weakref.ref(root)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        self.export = make_aiohttp_handler(self.registry)

    def observe(self, request: web.Request, response: web.StreamResponse) -> None:
        """Count the response and time it (one lookup when cached): called as it is prepared."""
        status = response.status
        series = self._series.get((request.match_info.route, status))
        if series is None:
            series = self._series_for(request, status)
        count, timing = series
        count.value += 1
        try:
            elapsed = time.perf_counter() - request[REQUEST_START]
        except KeyError:  # answered before the kernel middleware ran: counted, not timed
            pass
        else:
            timing.buckets[bisect_left(BUCKETS, elapsed)] += 1
            timing.total += elapsed
        if status == 101 and isinstance(response, web.WebSocketResponse):
            self.websockets[response] = _labels(request)[0]

    def _series_for(self, request: web.Request, status: int) -> tuple[Count, Timing]:
        match = request.match_info
        route = match.route
        method = request.method if request.method in METHODS else OTHER_METHOD
        if match.http_exception is None and route.method != "*":
            key: tuple[Any, ...] = (route, status)  # a route object lives as long as the app
        else:  # a new SystemRoute per 404, or any method on a "*" route: key by what is bounded
            key = (match.apps[-1], route if match.http_exception is None else None, method, status)
            cached = self._series.get(key)
            if cached is not None:
                return cached
        subapp, name = _labels(request)
        count = self.counts.setdefault((subapp, name, method, str(status)), Count())
        timing = self.timings.setdefault((subapp, name, method), Timing())
        self._series[key] = (count, timing)
        return count, timing

    def requests_by_subapp(self) -> dict[str, int]:
        """Return how many responses each sub-app (table name) has started."""
        totals: dict[str, int] = {}
        for (subapp, *_), count in list(self.counts.items()):
            totals[subapp] = totals.get(subapp, 0) + count.value
        return totals

    def describe(self) -> list[Metric]:
        return []  # the families depend on the backends found at scrape time

    def collect(self) -> Iterator[Metric]:
        """Return every family, read now (called by the registry on each scrape)."""
        yield from self._request_metrics()
        yield _websocket_metrics(self.websockets)
        root = self._root()
        if root is not None:
            yield from _pool_metrics(root.get(DB))
            yield from _bus_metrics(root.get(BUS))

    def _request_metrics(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            REQUESTS,
            "HTTP responses started, by sub-app, route name, method and status",
            labels=["subapp", "route", "method", "status"],
        )
        for labels, count in sorted(self.counts.items()):
            requests.add_metric(list(labels), count.value)
        yield requests
        latency = HistogramMetricFamily(
            LATENCY,
            "Seconds from the request reaching Nestor to its response starting",
            labels=["subapp", "route", "method"],
        )
        for labels, timing in sorted(self.timings.items()):
            cumulative, buckets = 0, []
            for bound, observed in zip((*BUCKETS, float("inf")), timing.buckets):
                cumulative += observed
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric(list(labels), buckets, timing.total)
        yield latency


METRICS = web.AppKey("nestor.metrics", Metrics)


def _labels(request: web.Request) -> tuple[str, str]:
    level = level_of(request.match_info.apps)
    if request.match_info.http_exception is not None:
        return level.label, UNMATCHED
    route = request.match_info.route
    name = route.name
    if name is None:  # unnamed: the route's template (with {variables}), never the raw path
        return level.label, route.resource.canonical if route.resource else UNMATCHED
    return level.label, f"{level.namespace}:{name}" if level.namespace else name


def _websocket_metrics(websockets: weakref.WeakKeyDictionary[web.WebSocketResponse, str]) -> Metric:
    family = GaugeMetricFamily("nestor_websockets_open", "Websockets open now, by sub-app", labels=["subapp"])
    open_by_app: dict[str, int] = {}
    for socket, subapp in list(websockets.items()):
        if not socket.closed:
            open_by_app[subapp] = open_by_app.get(subapp, 0) + 1
    for subapp, count in sorted(open_by_app.items()):
        family.add_metric([subapp], count)
    return family


def _pool_metrics(engine: Any) -> Iterator[Metric]:
    pool = getattr(engine, "pool", None)
    if pool is None or not all(hasattr(pool, m) for m in ("size", "checkedout", "overflow")):
        return  # StaticPool/NullPool keep no counts
    yield GaugeMetricFamily("nestor_db_pool_size", "Connections the pool keeps", value=pool.size())
    yield GaugeMetricFamily(
        "nestor_db_pool_checked_out", "Connections in use now", value=pool.checkedout()
    )
    yield GaugeMetricFamily(
        "nestor_db_pool_overflow",
        "Connections open beyond the pool size (negative: room left before overflow)",
        value=pool.overflow(),
    )


def _bus_metrics(bus: Any) -> Iterator[Metric]:
    # Counts appear once the bus backend offers `stats()` -> {"published": n, ...}.
    stats = getattr(bus, "stats", None)
    if stats is None:
        return
    values = stats()
    for key, help_text in (
        ("published", "Bus messages published by this process"),
        ("delivered", "Bus messages delivered to this process's subscribers"),
        ("dropped", "Bus messages dropped because a subscriber fell behind"),
    ):
        if key in values:
            yield CounterMetricFamily(f"nestor_bus_messages_{key}", help_text, value=values[key])
    if "subscriptions" in values:
        yield GaugeMetricFamily(
            "nestor_bus_subscriptions", "Bus subscriptions open now", value=values["subscriptions"]
        )


def setup(root: web.Application) -> Metrics:
    """Serve `/metrics` on the root; return the app's Metrics, whose `observe` the kernel calls."""
    metrics = Metrics(root)
    root[METRICS] = metrics
    root.add_routes([web.get("/metrics", metrics_page, name="metrics")])
    return metrics


async def metrics_page(request: web.Request) -> web.StreamResponse:
    """Every metric in Prometheus text format (OpenMetrics when the scraper asks for it).

    With `metrics_token` set, only for `Authorization: Bearer <metrics_token>` (401 otherwise).
    """
    token = request.app[METRICS_TOKEN]
    if token and not bearer_matches(request, token):
        raise web.HTTPUnauthorized(
            text="/metrics needs the metrics token: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return await request.app[METRICS].export(request)
