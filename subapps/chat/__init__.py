"""Chat: rooms with live messages over websockets at /chat, history and posting at /chat/api.

Messages travel on the kernel bus, so with `bus_url = "redis://…"` every worker process
sees every message. `nestor chat ROOM` is a terminal client (`client.py`): a command this
sub-app adds to `nestor`.
"""

from nestor import Command, SubApp

from . import db
from . import client
from .api import create_api_app
from .app import create_app, ready
from .settings import HEARTBEAT, HISTORY, KEEP_DAYS, MAX_LIMIT, MAX_MESSAGE_SIZE, MAX_TEXT, SEND_QUEUE

subapp = SubApp(
    name="chat",
    prefix="/chat",
    templates="templates",
    migrations="migrations",  # its tables' history (nestor db ...)
    metadata=db.metadata,
    title="Chat",
    factory=create_app,
    settings=[HISTORY, MAX_TEXT, MAX_MESSAGE_SIZE, SEND_QUEUE, HEARTBEAT, MAX_LIMIT, KEEP_DAYS],
    ready=ready,
    commands=[Command("chat", client.main, help="chat in a room from the terminal: nestor chat ROOM --url URL")],
    children=[
        SubApp(name="api", prefix="/api", factory=create_api_app, defaults={"error_format": "json"}),
    ],
)
