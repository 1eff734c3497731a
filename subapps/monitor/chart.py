"""The latency chart: a small server-rendered SVG polyline, redrawn by static/monitor.js live.

The newest check is at the right edge; a failed check is marked by a vertical line. The
script draws the same geometry from the `data` it is given, so both agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .db import Check

POINTS = 60  # checks shown, newest at the right
WIDTH, HEIGHT, PAD = 300, 60, 4


@dataclass(frozen=True)
class Chart:
    """What the template draws: the polyline, the x of each failure, and the scale."""

    line: str
    failures: list[float]
    peak_ms: float
    count: int
    data: str  # JSON [[latency_ms or null, ok], ...], oldest first, for the live script
    size: int = POINTS
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def latency_chart(recent: Sequence[Check], size: int = POINTS) -> Chart:
    """Return the chart of up to `size` checks, given newest first (as the database returns them)."""
    shown = list(reversed(recent[:size]))
    step = WIDTH / (size - 1)
    offset = size - len(shown)
    peak = max((c.latency_ms for c in shown if c.latency_ms is not None), default=0.0) or 1.0
    points, failures = [], []
    for index, check in enumerate(shown):
        x = round((offset + index) * step, 1)
        if check.latency_ms is not None:
            y = round(HEIGHT - PAD - check.latency_ms / peak * (HEIGHT - 2 * PAD), 1)
            points.append(f"{x},{y}")
        if not check.ok:
            failures.append(x)
    data = json.dumps([[c.latency_ms, c.ok] for c in shown])
    return Chart(" ".join(points), failures, peak, len(shown), data, size)
