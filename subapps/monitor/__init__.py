"""Monitor: an uptime dashboard at /monitor for HTTP targets, with a JSON API at /monitor/api."""

from nestor import SubApp

from . import db
from .api import create_api_app
from .app import create_app, ready
from .settings import KEEP_CHECKS, MANUAL_CHECK_INTERVAL, MAX_CONCURRENT, TARGETS

subapp = SubApp(
    name="monitor",
    prefix="/monitor",
    templates="templates",
    migrations="migrations",  # its tables' history (nestor db ...)
    metadata=db.metadata,
    title="Monitor",
    factory=create_app,
    settings=[TARGETS, KEEP_CHECKS, MAX_CONCURRENT, MANUAL_CHECK_INTERVAL],
    ready=ready,
    children=[
        SubApp(name="api", prefix="/api", factory=create_api_app, defaults={"error_format": "json"}),
    ],
)
