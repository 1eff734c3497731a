"""The one thread that writes every log line of `nestor serve`, and the time stamps of the lines.

`nestor.logs` hands it the lines of every logger; `nestor.accesslog` hands it the access
log's entries, which the thread turns into lines itself.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any


class LogWriter:
    """One thread writes every log line: the event loop only appends to a bounded queue.

    A slow disk or a full pipe never blocks the loop; past MAX_PENDING lines the newest are
    dropped and counted (one line says how many, once the stream keeps up again). The thread
    writes what is queued every FLUSH_EVERY seconds, and `close()` (at exit) writes the rest.
    A queued item is a whole line, or an access entry whose first item renders the rest.
    """

    MAX_PENDING = 100_000
    FLUSH_EVERY = 0.02

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.dropped = stream, 0
        self.lines: deque[Any] = deque()
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nestor log writer", daemon=True)
        self.thread.start()

    def put(self, line: Any) -> None:
        """Queue a whole line (with its newline), or an access entry; never blocks."""
        if len(self.lines) >= self.MAX_PENDING:
            self.dropped += 1
            return
        self.lines.append(line)

    def _run(self) -> None:
        while not self._closing.wait(self.FLUSH_EVERY):
            self._write()
        self._write()

    def _write(self) -> None:
        lines = self.lines
        if not lines:
            return
        chunk = []
        while lines:
            item = lines.popleft()
            if type(item) is not str:
                try:
                    item = item[0](item)
                except Exception as exc:  # noqa: BLE001 (a bug here must not stop every later line)
                    item = f"nestor: an access log line could not be built: {exc!r}\n"
            chunk.append(item)
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            chunk.append(f"nestor: {dropped} log line(s) dropped: the log's stream did not keep up\n")
        try:
            self.stream.write("".join(chunk))
            self.stream.flush()
        except (OSError, ValueError):  # the stream is closed or gone: nothing to write to
            pass

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        self._closing.set()
        self.thread.join(timeout=10)


class Clock:
    """Time stamps for log lines: the text made once per second, the whole stamp once per millisecond.

    Each cache is one tuple, replaced whole: a formatter's clock is called from any thread that
    logs, and a stamp must never pair one thread's millisecond with another's second.
    """

    MILLISECONDS = tuple(f"{ms:03d}" for ms in range(1000))

    def __init__(self, iso: bool) -> None:
        self.iso = iso
        self.last_second: tuple[int, str] = (-1, "")
        self.last: tuple[int, str] = (-1, "")

    def __call__(self, now: float) -> str:
        millisecond = int(now * 1000)
        last = self.last
        if last[0] == millisecond:  # lines come in order, a dozen a millisecond under load
            return last[1]
        second = millisecond // 1000
        known, text = self.last_second
        if known != second:
            if self.iso:  # ISO 8601 with the zone (JSON logs): 2026-12-02T01:17:11.253+00:00
                text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            else:  # what logging's default asctime writes: 2026-12-02 01:17:11,253
                text = time.strftime("%Y-%m-%d %H:%M:%S,", time.localtime(second))
            self.last_second = (second, text)
        ms = self.MILLISECONDS[millisecond - second * 1000]
        stamp = f"{text}{ms}+00:00" if self.iso else text + ms
        self.last = (millisecond, stamp)
        return stamp
