"""The admin pages at /admin: the URL map and the token check."""

from aiohttp import web

from nestor import ADMIN_TOKEN, require_token, setup_sessions

from . import views


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/", views.index, name="index"),
            web.get("/config", views.config, name="config"),
            web.get("/routes", views.routes, name="routes"),
            web.get("/login", views.login, name="login"),
            web.post("/login", views.login, name="login"),
            web.post("/logout", views.logout, name="logout"),
        ]
    )
    setup_sessions(app)  # the login form needs a session and a CSRF token
    # After sessions: the token check reads a form login from the session.
    app.middlewares.append(require_token(ADMIN_TOKEN, when_unset="hidden", login=views.login))
    return app
