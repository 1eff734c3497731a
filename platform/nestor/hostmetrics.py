"""`/metrics` for the whole host: every worker's figures in one scrape.

Workers of `nestor serve --workers N` share one port, so a scraper reaches one of them at
random. The one it reaches asks its siblings for their snapshots over private unix sockets
(in a folder the supervisor made for this run; a per-run token, not a URL, lets it in) and
answers with the host's totals: counters and histograms summed over the workers, gauges and
process figures (resident memory, CPU seconds, open files, start time) per worker with a
`worker` label, the supervisor's process figures under `worker="supervisor"`.

We chose this over prometheus-client's multiprocess mode, which needs its own locked
counters (three times the cost per request that the kernel's plain numbers have) and files
on disk written at every increment, and over the supervisor collecting (it serves nothing
and would need a channel of its own): the siblings answer only when scraped, and a scrape
of N workers costs N-1 local requests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from .auth import bearer_matches
from .metrics import BUCKETS, LATENCY, METRICS, METRICS_TOKEN, REQUESTS, process_figures

SIBLINGS = web.AppKey("nestor.siblings", dict)  # {"folder": run folder, "token": per-run secret}
SNAPSHOT_HEADER = "X-Nestor-Snapshot"  # a sibling's request for this worker's own snapshot
SIBLING_TIMEOUT = 2.0


def setup(root: web.Application) -> None:
    """Serve `/metrics` on the root."""
    root.add_routes([web.get("/metrics", metrics_page, name="metrics")])


async def metrics_page(request: web.Request) -> web.StreamResponse:
    """The host's metrics in Prometheus text format (OpenMetrics when the scraper asks for it).

    With `metrics_token` set, only for `Authorization: Bearer <metrics_token>` (401 otherwise).
    """
    siblings = request.app.get(SIBLINGS)
    own = request.app[METRICS].snapshot()
    if siblings and request.headers.get(SNAPSHOT_HEADER) == siblings["token"]:
        return web.json_response(own)  # a sibling gathering the host's figures
    if request.app[METRICS_TOKEN] and not await bearer_matches(request, METRICS_TOKEN):
        raise web.HTTPUnauthorized(
            text="/metrics needs the metrics token: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    snapshots = [own]
    if siblings:
        snapshots += await _siblings(siblings, own["worker"])
        supervisor = {"worker": "supervisor", "process": process_figures(os.getppid())}
        snapshots.append(supervisor)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(snapshots))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(registry), headers={"Content-Type": content_type})


async def _siblings(siblings: dict[str, Any], own: str) -> list[dict[str, Any]]:
    sockets = sorted(Path(siblings["folder"]).glob("worker-*.sock"))
    paths = [s for s in sockets if s.stem != f"worker-{own}"]
    found = await asyncio.gather(*(_snapshot(path, siblings["token"]) for path in paths))
    return [snapshot for snapshot in found if snapshot is not None]


async def _snapshot(path: Path, token: str) -> dict[str, Any] | None:
    """One sibling's snapshot, or None if it does not answer in time (it may be restarting)."""
    connector = aiohttp.UnixConnector(path=str(path))
    timeout = aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.get("http://worker/metrics", headers={SNAPSHOT_HEADER: token}) as resp:
                return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        return None


class _Families:
    """A collector of the families the snapshots make (registered for one scrape)."""

    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        workers = [s for s in self.snapshots if "requests" in s]
        yield _requests(workers)
        yield _latency(workers)
        yield from _gauges(workers)
        yield from _bus_counters(workers)
        yield from _process(self.snapshots)


def _requests(workers: list[dict[str, Any]]) -> Metric:
    family = CounterMetricFamily(
        REQUESTS, "HTTP responses started, by sub-app, route name, method and status (the host's total)",
        labels=["subapp", "route", "method", "status"],
    )
    totals: dict[tuple[str, ...], int] = {}
    for snapshot in workers:
        for *labels, value in snapshot["requests"]:
            totals[tuple(labels)] = totals.get(tuple(labels), 0) + value
    for labels, value in sorted(totals.items()):
        family.add_metric(list(labels), value)
    return family


def _latency(workers: list[dict[str, Any]]) -> Metric:
    family = HistogramMetricFamily(
        LATENCY, "Seconds from the request reaching Nestor to its response starting (the host's total)",
        labels=["subapp", "route", "method"],
    )
    totals: dict[tuple[str, ...], tuple[list[int], float]] = {}
    for snapshot in workers:
        for *labels, buckets, total in snapshot["latency"]:
            counts, seconds = totals.get(tuple(labels), ([0] * len(buckets), 0.0))
            totals[tuple(labels)] = ([a + b for a, b in zip(counts, buckets)], seconds + total)
    for labels, (counts, seconds) in sorted(totals.items()):
        cumulative, rows = 0, []
        for bound, observed in zip((*BUCKETS, float("inf")), counts):
            cumulative += observed
            rows.append((floatToGoString(bound), cumulative))
        family.add_metric(list(labels), rows, seconds)
    return family


def _gauges(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    sockets = GaugeMetricFamily("nestor_websockets_open", "Websockets open now, by sub-app and worker", labels=["subapp", "worker"])
    for snapshot in workers:
        for subapp, count in sorted(snapshot["websockets"].items()):
            sockets.add_metric([subapp, snapshot["worker"]], count)
    yield sockets
    for key, name, text in (
        ("size", "nestor_db_pool_size", "Connections the pool keeps, by worker"),
        ("checked_out", "nestor_db_pool_checked_out", "Connections in use now, by worker"),
        ("overflow", "nestor_db_pool_overflow", "Connections beyond the pool size (negative: room left), by worker"),
    ):
        family = GaugeMetricFamily(name, text, labels=["worker"])
        for snapshot in workers:
            if snapshot.get("pool"):
                family.add_metric([snapshot["worker"]], snapshot["pool"][key])
        yield family
    subscriptions = GaugeMetricFamily("nestor_bus_subscriptions", "Bus subscriptions open now, by worker", labels=["worker"])
    for snapshot in workers:
        if snapshot.get("bus"):
            subscriptions.add_metric([snapshot["worker"]], snapshot["bus"]["subscriptions"])
    yield subscriptions


def _bus_counters(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    for key, text in (
        ("published", "Bus messages published (the host's total)"),
        ("delivered", "Bus messages delivered to subscribers (the host's total)"),
        ("dropped", "Bus messages dropped because a subscriber fell behind (the host's total)"),
    ):
        total = sum(s["bus"][key] for s in workers if s.get("bus"))
        yield CounterMetricFamily(f"nestor_bus_messages_{key}", text, value=total)


def _process(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    for key, name, text, kind in (
        ("resident_memory_bytes", "nestor_process_resident_memory_bytes", "Resident memory", GaugeMetricFamily),
        ("cpu_seconds", "nestor_process_cpu_seconds", "CPU time used", CounterMetricFamily),
        ("open_fds", "nestor_process_open_fds", "Open file descriptors", GaugeMetricFamily),
        ("start_time_seconds", "nestor_process_start_time_seconds", "Start time (Unix time)", GaugeMetricFamily),
    ):
        family = kind(name, f"{text}, by worker (and the supervisor)", labels=["worker"])
        for snapshot in snapshots:
            if key in snapshot.get("process", {}):
                family.add_metric([snapshot["worker"]], snapshot["process"][key])
        yield family
