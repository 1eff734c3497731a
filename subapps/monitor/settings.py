"""Settings the monitor sub-app declares (under [monitor], or [nestor] for the whole server)."""

from nestor import Setting, positive

from .targets import validate_targets

TARGETS = Setting(
    "targets",
    list,
    [],
    validate=validate_targets,
    help="HTTP(S) targets to check: [{name, url, interval, timeout, expect_status}]; "
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
