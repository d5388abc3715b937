"""The console's blueprint: pages for coordinators and analysts, in French and English.

Pages are rendered on the server (Jinja), small enough for a weak mobile connection; a little
JavaScript (``static/console.js``) improves uploads and bulk selection where it runs, and every
page works without it. Views are thin: they check access with :mod:`server.auth.access`, call
the same services the API calls (never the API over HTTP), and render.

    /                                   sign in (anonymous), else the projects
    /login, /logout, /account/password  signing in and out, changing one's password
    /lang/<fr|en>                       the language switch (a cookie)
    /users                              web users (administrators)
    /projects/<p>                       forms of a project, upload of a new form
    /projects/<p>/app-users[/<id>]      tablets, their QR codes and forms
    /projects/<p>/members               who holds which role
    /projects/<p>/forms/<f>             a form: draft, structure, media, versions, state
    /projects/<p>/forms/<f>/submissions[/<instanceID>]   records, review, comments
    /projects/<p>/forms/<f>/conflicts[/<id>]   records sent again with other answers, settled
    /projects/<p>/forms/<f>/overview    charts and map
    /projects/<p>/forms/<f>/export      export options, downloads, the cleaning log
    /projects/<p>/forms/<f>/fill        the form in the browser (ODK Web Forms; also draft/fill,
                                        submissions/<id>/edit, public links and /-/<token>)
    /audit                              the audit log (administrators and managers)

Every console response carries strict security headers (:mod:`server.web.security`): pages
the console's Content-Security-Policy, files its routes serve (attachments, XForms, workbooks,
exports) the sandbox every served file gets. Problems raised here render as a page in the
user's language.
"""

from __future__ import annotations

from importlib import import_module

from flask import Blueprint, Flask

from server import errors
from server.audit import services as audit
from server.web import common, security

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/console",
)
errors.set_renderer("web", common.render_problem)
bp.before_request(security.require_console_session)
bp.after_request(security.add_headers)
bp.context_processor(common.template_context)
bp.app_template_global()(common.asset)
bp.app_template_global("audit_action")(audit.describe)
bp.app_template_global("audit_details")(audit.detail_lines)


# Page modules, each adding its routes to ``bp`` when imported.
PAGES = (
    "server.web.pages.account",
    "server.web.pages.projects",
    "server.web.pages.forms",
    "server.web.pages.app_users",
    "server.web.pages.submissions",
    "server.web.pages.conflicts",
    "server.web.pages.overview",
    "server.web.pages.exports",
    "server.web.pages.audit",
    "server.web.pages.webforms",
)

for _name in PAGES:
    import_module(_name)


def init_app(app: Flask) -> None:
    """Give the console's templates their filters (dates in the user's language...)."""
    app.jinja_env.filters.update(common.FILTERS)
