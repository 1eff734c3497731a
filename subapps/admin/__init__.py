"""Admin at /admin: what is mounted, the effective configuration and the full route tree.

Behind the `admin_token` setting (a bearer token, or the login form); with no token
configured the admin answers 404 everywhere: disabled, never open.
"""

from nestor import SubApp

from .app import create_app

subapp = SubApp(
    name="admin",
    prefix="/admin",
    templates="templates",
    title="Admin",
    factory=create_app,
    nav=False,  # 404 until admin_token is set: no link to it in every page's navigation
)
