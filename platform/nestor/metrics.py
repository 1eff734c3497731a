"""The figures behind `/metrics`, kept by each process: requests, latency, websockets, pool, bus.

Labels are the serving sub-app, the namespaced route name, the method and the status,
never the raw path, so a scan of a million URLs adds no series. Per request, in the
kernel's one response-prepare handler, the cost is one dict lookup (series are cached by route
object and status), one counter increment and one histogram observation, kept as plain
numbers (the event loop is one thread: prometheus-client's locked values cost three times
as much). `snapshot()` gives them as plain data with the gauges and the process's own
figures, read then; `nestor.hostmetrics` sums the snapshots of a host's workers into the
Prometheus families a scrape gets. Each root app has its own series.
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left
from typing import Any

from aiohttp import web
from prometheus_client.process_collector import ProcessCollector

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
# Which worker this process is under `nestor serve --workers N` (0 to N-1); absent otherwise.
WORKER = web.AppKey("nestor.worker", int)
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


class Metrics:
    """The request series of one root app, the per-request observation, and its snapshot."""

    def __init__(self, root: web.Application) -> None:
        self.counts: dict[tuple[str, str, str, str], Count] = {}  # (subapp, route, method, status)
        self.timings: dict[tuple[str, str, str], Timing] = {}  # (subapp, route, method)
        self.websockets: weakref.WeakKeyDictionary[web.WebSocketResponse, str] = (
            weakref.WeakKeyDictionary()
        )
        # (route, status) -> (Count, Timing); unmatched requests by (app, route, method, status).
        self._series: dict[tuple[Any, ...], tuple[Count, Timing]] = {}
        self._root = weakref.ref(root)

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

    def snapshot(self) -> dict[str, Any]:
        """This process's figures as plain data (JSON): what a scrape of the host sums or labels by worker."""
        root = self._root()
        open_by_app: dict[str, int] = {}
        for socket, subapp in list(self.websockets.items()):
            if not socket.closed:
                open_by_app[subapp] = open_by_app.get(subapp, 0) + 1
        return {
            "worker": str(root.get(WORKER, 0)) if root is not None else "0",
            "requests": [[*labels, count.value] for labels, count in self.counts.items()],
            "latency": [[*labels, list(t.buckets), t.total] for labels, t in self.timings.items()],
            "websockets": open_by_app,
            "pool": _pool(root.get(DB)) if root is not None else None,
            "bus": root[BUS].stats() if root is not None and BUS in root else None,
            "process": process_figures("self"),
        }


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


def _pool(engine: Any) -> dict[str, int] | None:
    pool = getattr(engine, "pool", None)
    if pool is None or not all(hasattr(pool, m) for m in ("size", "checkedout", "overflow")):
        return None  # StaticPool/NullPool keep no counts
    return {"size": pool.size(), "checked_out": pool.checkedout(), "overflow": pool.overflow()}


def process_figures(pid: int | str) -> dict[str, float]:
    """A process's resident memory, CPU seconds, open file descriptors and start time (Linux /proc)."""
    names = {
        "process_resident_memory_bytes": "resident_memory_bytes",
        "process_cpu_seconds": "cpu_seconds",
        "process_open_fds": "open_fds",
        "process_start_time_seconds": "start_time_seconds",
    }
    found = {}
    for family in ProcessCollector(pid=lambda: pid, registry=None).collect():
        if family.name in names and family.samples:
            found[names[family.name]] = family.samples[0].value
    return found


def setup(root: web.Application) -> Metrics:
    """Keep the root's request series; return the Metrics, whose `observe` the kernel calls."""
    metrics = Metrics(root)
    root[METRICS] = metrics
    return metrics
