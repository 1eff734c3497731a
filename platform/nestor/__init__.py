"""Nestor: a nested multi-app platform on aiohttp."""

from .app import create_app
from .config import PAGE_SIZE, ConfigError, Setting, one_of, positive
from .db import DB
from .bus import BUS
from .auth import ADMIN_TOKEN, API_TOKEN, require_token
from .middleware import HANDLER_TIME, REQUEST_ID
from .subapp import SubApp
from .tree import config_of

__all__ = [
    "ADMIN_TOKEN",
    "API_TOKEN",
    "BUS",
    "DB",
    "HANDLER_TIME",
    "PAGE_SIZE",
    "REQUEST_ID",
    "ConfigError",
    "Setting",
    "SubApp",
    "config_of",
    "create_app",
    "one_of",
    "positive",
    "require_token",
]
