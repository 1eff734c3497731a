"""Nestor: a nested multi-app platform on aiohttp.

This module is the SDK: every name a sub-app author needs, and nothing else. Sub-apps
(the first-party ones too) import only from here; the kernel's modules behind it are its
own business and may change. README.md ("Writing a sub-app") shows each name in use.

Declaring a sub-app
    SubApp, Command, Setting, ConfigError, one_of, positive, redact
Reading configuration and services (in handlers: `request.config_dict[KEY]`)
    config_of, PAGE_SIZE, API_TOKEN, ADMIN_TOKEN, HOST, PORT, DB, BUS, Bus, Subscription
Start-up
    tables, leader, Lease, served_url
Handling requests
    REQUEST_ID, operation, Problem, read_json, read_form, query_int, path_int, invalid,
    wants_json, json_response, json_dumps, shield, static, WebSocket, forward, require_token, guards
Sessions and forms
    setup_sessions, get_session, csrf_token, remember_token, forget_token
The whole site
    get_site, Site, create_app
"""

from .accesslog import WebSocket
from .app import HOST, PORT, create_app, served_url
from .auth import ADMIN_TOKEN, API_TOKEN, forget_token, guards, remember_token, require_token
from .bus import BUS, Bus, Subscription, forward
from .config import PAGE_SIZE, ConfigError, Setting, one_of, positive
from .db import DB, tables
from .errors import wants_json
from .inputs import invalid, path_int, query_int, read_form, read_json
from .jobs import shield
from .jsonenc import dumps as json_dumps
from .jsonenc import json_response
from .leases import Lease, leader
from .middleware import REQUEST_ID
from .pages import static
from .redaction import redact
from .schemas import Problem, operation
from .sessions import csrf_token, get_session
from .sessions import setup as setup_sessions
from .site import Site, get_site
from .subapp import Command, SubApp
from .tree import config_of

__all__ = [
    # declaring a sub-app
    "SubApp",
    "Command",
    "Setting",
    "ConfigError",
    "one_of",
    "positive",
    "redact",
    # configuration and services
    "config_of",
    "PAGE_SIZE",
    "API_TOKEN",
    "ADMIN_TOKEN",
    "HOST",
    "PORT",
    "DB",
    "BUS",
    "Bus",
    "Subscription",
    # start-up
    "tables",
    "leader",
    "Lease",
    "served_url",
    # requests
    "REQUEST_ID",
    "operation",
    "Problem",
    "read_json",
    "read_form",
    "query_int",
    "path_int",
    "invalid",
    "wants_json",
    "json_response",
    "json_dumps",
    "shield",
    "static",
    "WebSocket",
    "forward",
    "require_token",
    "guards",
    # sessions and forms
    "setup_sessions",
    "get_session",
    "csrf_token",
    "remember_token",
    "forget_token",
    # the whole site
    "get_site",
    "Site",
    "create_app",
]
