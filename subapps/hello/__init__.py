"""Hello: the smallest sub-app, a page at /hello and a JSON API at /hello/api."""

from nestor import SubApp

from .api import create_api_app
from .app import create_app
from .settings import GREETING

subapp = SubApp(
    name="hello",
    prefix="/hello",
    templates="templates",
    title="Hello",
    factory=create_app,
    settings=[GREETING],
    children=[
        SubApp(name="api", prefix="/api", factory=create_api_app, defaults={"error_format": "json"}),
    ],
)
