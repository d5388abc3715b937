"""What every console page shares: rendering, the signed-in user, lookups, small parsers."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import (
    format_date,
    format_datetime,
    format_decimal,
    get_locale,
)

from server import bounds, db, errors
from server.auth import access
from server.auth.passwords import MIN_PASSWORD_LENGTH
from server.forms import services as forms
from server.forms.models import Form
from server.projects import services as projects
from server.projects.models import Project
from server.submissions import conflicts
from server.web import security

STATIC = Path(__file__).resolve().parent / "static"
LANGUAGES = ("fr", "en")
PAGE_SIZE = 50


# ---- rendering -------------------------------------------------------------------------------


def page(template: str, *, status: int = 200, **context: Any) -> Response:
    """Render a console page, with the console's Content-Security-Policy.

    Only pages rendered here get that policy: anything else a console route answers (a file,
    an export) keeps the sandbox of served content (:mod:`server.web.security`).
    """
    form = context.get("form")
    if isinstance(form, Form) and "form_title" not in context:
        # Pages, titles and crumbs name a form by its title (its formID is shown once, small).
        context["form_title"] = forms.titles(db.session(), [form])[form.id]
    response = Response(render_template(template, status=status, **context), status=status)
    response.mimetype = "text/html"
    return security.console_page(response)


def render_problem(problem: errors.Problem) -> Response:
    """Render a problem raised in the console as a page in the user's language.

    Someone not signed in who opens a page is sent to the sign-in page, and back afterwards.
    """
    if problem.status == 401 and request.method in ("GET", "HEAD"):
        return redirect(url_for("web.login", next=_here()), code=303)
    response = page(
        "web/problem.html",
        status=problem.status,
        problem=problem,
        message=problem.render_message(),
        located=problem.details.get("errors") if isinstance(problem.details, dict) else None,
    )
    for name, value in problem.headers.items():
        if name.lower() != "www-authenticate":
            response.headers[name] = value
    return response


def _here() -> str:
    query = request.query_string.decode("latin-1")
    return request.path + ("?" + query if query else "")


@cache
def _asset_hash(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def asset(name: str) -> str:
    """Return the URL of a static file, versioned by its content (cached for a year)."""
    return url_for("web.static", filename=name, v=_asset_hash(name))


def ui_language() -> str:
    """Return the language of the page: fr or en."""
    locale = str(get_locale() or current_app.config["DEFAULT_LANGUAGE"])
    return locale if locale in LANGUAGES else "fr"


def template_context() -> dict[str, Any]:
    """Return what every console template may use."""
    actor = access.current_actor()
    if actor is not None and actor.is_app_user:
        actor = None  # a tablet's token opens no console page
    auth_session = g.get("auth_session")
    return {
        "actor": actor,
        "is_admin": actor is not None and access.can("user.list"),
        "show_audit": actor is not None and may_read_audit(),
        "csrf_token": auth_session.csrf if auth_session is not None else "",
        "can": access.can,
        "lang": ui_language(),
        "here": _here(),
        "tile_url": current_app.config.get("TILE_URL") or "",
        "min_password": MIN_PASSWORD_LENGTH,
    }


def may_read_audit() -> bool:
    """Tell whether the actor may read the audit log of the site or of any project."""
    if access.can("audit.read"):
        return True
    visible = access.visible_project_ids() or set()
    return any(access.can("audit.read", project_id=p) for p in visible)


def query_url(endpoint: str, params: dict[str, Any], **values: Any) -> str:
    """Return a URL for ``endpoint`` with the non-empty ``params`` as its query."""
    kept = {k: v for k, v in params.items() if v not in (None, "", [], ())}
    base = url_for(endpoint, **values)
    return base + ("?" + urlencode(kept, doseq=True) if kept else "")


# ---- filters ---------------------------------------------------------------------------------


def _when(value: dt.datetime | None) -> str:
    return format_datetime(value, "short") if value is not None else ""


def _day(value: dt.date | dt.datetime | None) -> str:
    return format_date(value, "medium") if value is not None else ""


def _percent(value: float) -> str:
    return format_decimal(value, "#,##0.#") + "\u00a0%"


def _number(value: int) -> str:
    return format_decimal(value, "#,##0")


FILTERS = {
    "when": _when,
    "day": _day,
    "percent": _percent,
    "number": _number,
}


# ---- lookups with access ---------------------------------------------------------------------


def project_for(project_id: int, verb: str = "project.read") -> Project:
    """Return a live project the actor may ``verb``; 404 or 403 otherwise."""
    access.require_actor()
    project = projects.get(db.session(), project_id)
    access.require(verb, project_id=project.id)
    return project


def form_for(project_id: int, xml_form_id: str, verb: str = "form.read") -> tuple[Project, Form]:
    """Return a project and its live form that the actor may ``verb``; 404 or 403 otherwise."""
    access.require_actor()
    project = projects.get(db.session(), project_id)
    form = forms.get_form(db.session(), project.id, xml_form_id)
    access.require_on_form(verb, form)
    return project, form


def open_conflicts(form: Form) -> int:
    """Return how many of the form's conflicts wait, for those who may settle them (else 0)."""
    if not access.can("submission.update", project_id=form.project_id, form_id=form.id):
        return 0
    return conflicts.count_open(db.session(), form.id)


# Control characters (C0, DEL, C1) and the backslash: never in an address we send anyone to.
_UNSAFE_IN_NEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def safe_next(target: str | None, default: str) -> str:
    """Return ``target`` if it is a path on this site (never another site), else ``default``.

    The one rule for every address a person's request asks to be sent on to (``next``, the
    page to go back to). Browsers drop tabs and newlines anywhere in an address and read ``\\``
    as ``/``, so ``/<tab>/evil.example`` is ``//evil.example``, another site: only a path that
    starts with exactly one ``/``, with no control character (which would also break the
    ``Location`` header) and no backslash, is kept.
    """
    if not target or not target.startswith("/") or target[1:2] == "/":
        return default
    if _UNSAFE_IN_NEXT.search(target):
        return default
    return target


def redirect_next(target: str | None, default: str) -> Response:
    """Answer 303 to ``target`` when :func:`safe_next` keeps it, else to ``default``."""
    return redirect(safe_next(target, default), code=303)


# ---- parsing form fields and filters ---------------------------------------------------------


def parse_date(name: str, raw: str | None, label: str) -> dt.date | None:
    """Read a date field (YYYY-MM-DD, what ``<input type=date>`` sends); raise a 400 page."""
    if not raw or not raw.strip():
        return None
    try:
        return bounds.day(raw)
    except bounds.OutOfBounds as exc:
        raise errors.FieldValueRefused(field=label, reason=exc.reason, name=name) from None


def start_of(day: dt.date | None, *, next_day: bool = False) -> dt.datetime | None:
    """Return midnight UTC at the start of ``day`` (or of the day after)."""
    if day is None:
        return None
    moment = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return moment + dt.timedelta(days=1) if next_day else moment


def parse_int(raw: str | None, label: str) -> int | None:
    """Read a whole number field; raise a 400 page when it is not one."""
    if raw is None or raw.strip() == "":
        return None
    try:
        return bounds.whole_number(raw)
    except bounds.OutOfBounds as exc:
        raise errors.FieldValueRefused(field=label, reason=exc.reason) from None


# ---- long lists: filtered, then paged ----------------------------------------------------------

LIST_PAGE_SIZE = 100
# Lists longer than this are summarised on the pages that show them among other things (a
# form's questions, its overview), with a link to a page of their own, filtered and paged.
LONG_LIST = 25


def folded(text: str) -> str:
    """Return ``text`` without case or accents, so that a filter «segou» finds «Ségou»."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def matching(query: str, texts: list[str]) -> bool:
    """Tell whether every word of ``query`` is in one of ``texts`` (case and accents aside)."""
    haystack = " ".join(folded(text) for text in texts)
    return all(word in haystack for word in folded(query).split())


@dataclass(frozen=True)
class Paged:
    """One page of a long list: its items, its number (from 1), how many pages and items."""

    items: list[Any]
    number: int
    pages: int
    total: int
    size: int

    @property
    def first_index(self) -> int:
        """Return the position (from 1) of the page's first item in the whole list."""
        return (self.number - 1) * self.size + 1 if self.items else 0

    @property
    def last_index(self) -> int:
        """Return the position (from 1) of the page's last item in the whole list."""
        return self.first_index + len(self.items) - 1 if self.items else 0


def paged(items: list[Any], raw_page: str | None, label: str, size: int = LIST_PAGE_SIZE) -> Paged:
    """Return the page ``raw_page`` (a number from 1; beyond the last: the last) of ``items``."""
    number = parse_int(raw_page, label) or 1
    pages = max(1, math.ceil(len(items) / size))
    number = min(max(number, 1), pages)
    start = (number - 1) * size
    return Paged(items[start : start + size], number, pages, len(items), size)


def pager_links(shown: Paged, url_of: Callable[[int], str]) -> dict[str, str | None]:
    """Return the pager's links (``newer_url``, ``older_url``) around the page ``shown``."""
    return {
        "newer_url": url_of(shown.number - 1) if shown.number > 1 else None,
        "older_url": url_of(shown.number + 1) if shown.number < shown.pages else None,
    }
