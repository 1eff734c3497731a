"""Polls: questions, votes and live results at /polls, with a JSON API at /polls/api."""

from nestor import SubApp

from . import db
from .api import create_api_app
from .app import create_app, ready
from .settings import MAX_BODY, MAX_LIMIT

subapp = SubApp(
    name="polls",
    prefix="/polls",
    templates="templates",
    migrations="migrations",  # its tables' history (nestor db ...)
    metadata=db.metadata,
    title="Polls",
    factory=create_app,
    settings=[MAX_LIMIT, MAX_BODY],
    ready=ready,
    children=[
        SubApp(name="api", prefix="/api", factory=create_api_app, defaults={"error_format": "json"}),
    ],
)
