"""The application factory: configuration, extensions, blueprints, error handling, CLI."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from flask import Flask, g, request
from flask_babel import Babel
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from server import (  # noqa: F401 - models: every table known at start
    bounds,
    compression,
    db,
    errors,
    logs,
    models,
    routing,
)
from server import config as config_module
from server.web import security

LANGUAGES = ("fr", "en")

# Each blueprint module exposes ``bp`` (a Blueprint) and may expose ``init_app(app)``.
# The order matters only for URL rules that overlap; none do.
BLUEPRINTS = (
    "server.health",
    "server.api.blueprint",
    "server.openrosa.views",
    "server.web.views",
)

# Extensions other packages provide; each module exposes ``init_app(app)``.
EXTENSIONS = (
    "server.auth.authenticate",
    "server.storage.services",
    "server.personal",  # personal data read in clear is audited before the answer leaves
    "server.ops",  # request bodies received whole before the app runs; secrets masked in logs
    "server.metrics",  # request timing, S3 failures, GET /metrics (outermost)
)


class WholeNumberConverter(IntegerConverter):
    """``<int:...>`` in a route: ASCII digits, at most :data:`server.bounds.INT_MAX`.

    Werkzeug's own takes any Unicode digits and any size, and a path such as
    ``/v1/projects/99999999999999999999`` then overflowed SQLite (a 500); beyond the bound the
    path names nothing, so it is a 404 like any other unknown path.
    """

    regex = r"[0-9]+"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", bounds.INT_MAX)
        super().__init__(map, *args, **kwargs)


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the application from the environment, then ``overrides`` (tests, CLI)."""
    app = Flask(__name__, static_folder=None)
    app.config.update(config_module.load(overrides=overrides))
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    # Multipart parts without a file name (Collect's *isIncomplete* flag, small fields) are
    # held in memory; the XML part may come without a file name from other clients.
    app.config["MAX_FORM_MEMORY_SIZE"] = 16 * 1024 * 1024
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = app.config["SECURE_COOKIES"]
    app.json.sort_keys = False
    if app.config["TRUST_PROXY"]:
        n = app.config["TRUST_PROXY"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)

    @app.before_request
    def _fresh_request_state() -> None:
        # In production every request has its own application context and so its own ``g``.
        # A caller already holding a context (a test, a script) would otherwise share ``g``
        # (the signed-in actor, its rights, the database session) between its requests.
        g.__dict__.clear()

    logs.init_app(app)
    Babel(app, locale_selector=select_locale, default_domain="messages")
    db.init_app(app)
    errors.register(app)
    # Before any rule is added: every ``<int:...>`` of every route is bounded the same way.
    app.url_map.converters["int"] = WholeNumberConverter
    # ... and every ``<name>`` may hold an encoded "/" or "%" (Central's formIDs may).
    routing.init_app(app)
    for name in EXTENSIONS:
        import_module(name).init_app(app)
    for name in BLUEPRINTS:
        module = import_module(name)
        if hasattr(module, "init_app"):
            module.init_app(app)
        app.register_blueprint(module.bp)
    # Around every other middleware, so that their answers are compressed too (issue 19).
    compression.init_app(app)
    # Last, so outermost: every response, the middleware's own answers included, gets
    # nosniff and, unless it is a console page, the sandbox of served content (issue 16).
    security.init_app(app)
    # Outside even that: every layer routes and logs the path rebuilt from the raw request.
    routing.wrap(app)
    return app


def select_locale() -> str:
    """Pick the language of this request: explicit choice, then the client's, then the default.

    ODK Collect sends no Accept-Language, so tablets get the default language (French).
    Outside a request (commands, background jobs) the default language is used.
    """
    from flask import current_app, has_request_context

    default = current_app.config["DEFAULT_LANGUAGE"]
    if not has_request_context():
        return default
    chosen = g.get("locale")
    if chosen in LANGUAGES:
        return chosen
    cookie = request.cookies.get("lang")
    if cookie in LANGUAGES:
        return cookie
    if request.path.startswith("/v1/") and request.accept_languages:
        return request.accept_languages.best_match(LANGUAGES, default=default)
    return default
