"""Settings the polls sub-app declares."""

from nestor import Setting, positive

MAX_LIMIT = Setting(
    "max_limit",
    int,
    100,
    validate=positive,
    help="Largest ?limit= a JSON list answers with; larger requests are capped to it",
)
MAX_BODY = Setting(
    "max_body",
    int,
    64 * 1024,
    validate=positive,
    help="Largest JSON request body in bytes; larger ones get 413",
)
