"""Settings the monitor sub-app declares (under [monitor], or [nestor] for the whole server)."""

from nestor import Setting, positive

from .targets import validate_targets


def _seconds_or_zero(value: float) -> float:
    if not 0 <= value <= 86400:
        raise ValueError(f"expected seconds from 0 (no limit) to 86400, got {value:g}")
    return value


TARGETS = Setting(
    "targets",
    list,
    [],
    validate=validate_targets,
    help="HTTP(S) targets to check: [{name, url, interval, timeout, expect_status, follow_redirects_to}]; "
    "none configured watches Nestor's own /health",
)
KEEP_CHECKS = Setting(
    "keep_checks",
    int,
    2880,
    validate=positive,
    help="Checks kept per target; older ones are deleted (2880 is a day at 30 s)",
)
MAX_CONCURRENT = Setting(
    "max_concurrent",
    int,
    10,
    validate=positive,
    help="Checks in flight at once, and the client's connection limit",
)
MANUAL_CHECK_INTERVAL = Setting(
    "manual_check_interval",
    float,
    10.0,
    validate=_seconds_or_zero,
    help="Seconds between two checks of one target asked for through the API (POST .../check), "
    "counted for the whole site; sooner is 429. 0 removes the limit",
)
