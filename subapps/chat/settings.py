"""Settings the chat sub-app declares."""

import math

from nestor import Setting, positive


def _days(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a number of days of at least 0 (0 keeps every message), got {value}")
    return value


def _seconds(value: float) -> float:
    if value <= 0:
        raise ValueError(f"expected a number of seconds above 0, got {value}")
    return value


HISTORY = Setting(
    "history", int, 50, validate=positive, help="Messages a websocket gets from history when it joins a room"
)
MAX_TEXT = Setting(
    "max_text", int, 2000, validate=positive, help="Longest message text in characters"
)
MAX_MESSAGE_SIZE = Setting(
    "max_message_size",
    int,
    16 * 1024,
    validate=positive,
    help="Largest websocket frame or API body in bytes; larger frames close the socket with 1009, larger bodies get 413",
)
SEND_QUEUE = Setting(
    "send_queue",
    int,
    256,
    validate=positive,
    help="Messages waiting for one websocket; a client that lets more pile up is closed with 1013",
)
HEARTBEAT = Setting(
    "heartbeat", float, 30.0, validate=_seconds, help="Seconds between websocket pings; a peer that does not answer is dropped"
)
MAX_LIMIT = Setting(
    "max_limit", int, 200, validate=positive, help="Largest ?limit= the history API answers with; larger ones are capped"
)
KEEP_DAYS = Setting(
    "keep_days",
    float,
    0.0,
    validate=_days,
    help="Days a message is kept; older ones are deleted at start-up and every hour (0: every message is kept)",
)
