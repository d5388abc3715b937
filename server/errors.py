"""Problems: every failure a client can see, with a stable code, rendered in one place.

Codes follow ODK Central's scheme: a decimal whose integer part is the HTTP status (``409.3``
means 409, "already exists"), so pyodk and Central's documentation read them unchanged.
Messages are English templates translated at render time (French is the default on tablets);
``details`` carries the facts a program needs (field, row, sheet...).

    Problem
     ├── BadRequest             400.x  the request cannot be read or breaks a rule
     ├── Unauthorized           401.x  who you are is unknown (challenge follows)
     ├── Forbidden              403.x  who you are may not do this
     ├── NotFound               404.x
     ├── MethodNotAllowed       405.1
     ├── NotAcceptable          406.x
     ├── UploadTooSlow          408.x  a request body that stalled or fell behind the minimum rate
     ├── Conflict               409.x  the state of the server forbids it
     ├── PayloadTooLarge        413.x
     ├── RangeNotSatisfiable    416.1  a download's Range outside the file
     ├── AccountLocked          429.1  too many failed sign-ins
     ├── TooManyRequests        429.x
     ├── NotImplementedFeature  501.x  what ODK Central's API has and this server does not do
     └── Unavailable            503.x  try again later (Retry-After)

Every Problem class of the server is in this module (a test checks it), so that a code is
defined once and a new one can be checked against the others.


The three renderers live here too: JSON for ``/v1`` (Central's ``{code, message, details}``),
an ``OpenRosaResponse`` document for ODK Collect, and an HTML page for the console. Which one a
request gets is decided by the blueprint that served it (see :func:`register`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, render_template_string, request
from flask_babel import lazy_gettext
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class Problem(Exception):
    """A failure with a stable code, a translatable message and machine-readable details."""

    code: str = "500.1"
    message: str = lazy_gettext("An unexpected problem occurred on the server. Try again later.")
    headers: dict[str, str]

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.render_message())

    @property
    def status(self) -> int:
        """HTTP status: the integer part of the code."""
        return int(self.code.split(".", 1)[0])

    def render_message(self) -> str:
        """Return the message in the current language, with details filled in."""
        template = str(self.message)
        try:
            return template % self.details if self.details and "%(" in template else template
        except (KeyError, TypeError, ValueError):
            return template

    def to_json(self) -> dict[str, Any]:
        """Return Central's JSON error body."""
        # Central sends the code as a JSON number; no code's minor part ends in 0, so a float
        # never confuses 400.1 with 400.10 (a unit test keeps it so).
        body: dict[str, Any] = {"code": float(self.code), "message": self.render_message()}
        if self.details:
            body["details"] = self.details
        return body


# ---- 400 -------------------------------------------------------------------------------------


class BadRequest(Problem):
    code = "400.1"
    message = lazy_gettext("The request could not be read: %(reason)s")


class Unparseable(BadRequest):
    code = "400.1"
    message = lazy_gettext("The data sent could not be read as %(format)s: %(reason)s")


class MissingParameter(BadRequest):
    code = "400.2"
    message = lazy_gettext("The required parameter %(field)s is missing.")


class MissingMultipartField(BadRequest):
    code = "400.7"
    message = lazy_gettext("The upload has no part named %(field)s.")


class UnexpectedValue(BadRequest):
    code = "400.8"
    message = lazy_gettext("Unexpected value for %(field)s: %(reason)s")


class NotAFormRecord(UnexpectedValue):
    # Issue 16: a "record" that is a web page (an XHTML root holding a <script>) would run in
    # the browser of whoever opens its XML. Central's code for an unexpected value.
    code = "400.8"
    message = lazy_gettext("This is not a record of form %(form_id)s: %(reason)s")


class Undecryptable(BadRequest):
    code = "400.12"
    message = lazy_gettext(
        "The records could not be decrypted. Check the passphrase or private key and try again."
    )


class XlsformInvalid(BadRequest):
    code = "400.15"
    message = lazy_gettext(
        "The form %(filename)s could not be compiled. The errors are listed with their sheet, "
        "row and column."
    )


class FormWarnings(BadRequest):
    code = "400.16"
    message = lazy_gettext(
        "The form is valid but has warnings. Read them, and if they are acceptable send it again "
        "with ignoreWarnings=true."
    )


class ExpectedDeprecation(BadRequest):
    code = "400.19"
    message = lazy_gettext(
        "An edit must carry meta/deprecatedID naming the current version's instanceID."
    )


class PasswordTooShort(BadRequest):
    code = "400.21"
    message = lazy_gettext("The password or passphrase must have at least %(minimum)s characters.")


class HostileInput(BadRequest):
    code = "400.31"
    message = lazy_gettext("The data sent was refused: %(reason)s")


class BadExportOption(UnexpectedValue):
    """An export option has a value that cannot be used (server/exports/options.py)."""

    code = "400.8"
    message = lazy_gettext("Unexpected value for %(field)s: %(reason)s")


class ODataFilterInvalid(BadRequest):
    """A ``$filter`` expression that cannot be read or used (server/odata/filter.py)."""

    code = "400.18"
    message = lazy_gettext("The $filter expression cannot be used: %(reason)s")


class PropertyNotFound(BadRequest):
    """A ``$select`` naming no property of the OData table."""

    code = "400.23"
    message = lazy_gettext("Could not find a property named %(property)s.")


class UnsupportedSelect(BadRequest):
    code = "400.24"
    message = lazy_gettext(
        "The $select property %(property)s is inside a repeat: select it from the repeat's own "
        "table."
    )


class CorrectionsRefused(BadRequest):
    """Some lines of a corrections upload were refused, so nothing was applied."""

    code = "400.41"
    message = lazy_gettext(
        "%(count)s of %(total)s corrections were refused, so none was applied. Fix the lines "
        "listed and upload the file again, or send it with partial=true to apply the valid ones."
    )


class UnreadableCorrections(BadRequest):
    """The corrections file cannot be read as the expected CSV."""

    code = "400.42"
    message = lazy_gettext("The corrections file cannot be used: %(reason)s")


class BadCursor(BadRequest):
    """A cursor or ``$skiptoken`` this server did not hand out (or for another order)."""

    code = "400.35"
    message = lazy_gettext(
        "The paging cursor is not valid here: start again from the first page without it."
    )


class FieldValueRefused(UnexpectedValue):
    """A filter or form field of a console page has a value that cannot be used."""

    code = "400.8"
    message = lazy_gettext("The value of “%(field)s” cannot be used: %(reason)s")


class InvalidEntity(BadRequest):
    code = "400.28"
    message = lazy_gettext("The entity is invalid: %(reason)s")


# ---- 401 / 403 -------------------------------------------------------------------------------


class Unauthorized(Problem):
    code = "401.2"
    message = lazy_gettext("Could not authenticate with the credentials provided.")


class HttpsOnly(Unauthorized):
    code = "401.3"
    message = lazy_gettext("This way of signing in is only accepted over HTTPS.")


class AuthenticationRequired(Unauthorized):
    code = "401.4"
    message = lazy_gettext("This resource requires authentication.")


class Forbidden(Problem):
    code = "403.1"
    message = lazy_gettext("You do not have the right to do this.")


class BadToken(Forbidden):
    # 403 and not 401: a 401 would make ODK Collect ask for a password an app user does not
    # have (openrosa.md §5).
    code = "403.1"
    message = lazy_gettext(
        "This device's access has been revoked or is not valid. Ask your coordinator for a new "
        "QR code."
    )


class PersonalDataInClearRefused(Forbidden):
    """An export asking for personal data in clear from a reader who may not see it."""

    code = "403.1"
    message = lazy_gettext("You may not export personal data in clear; ask for pii=pseudonymise.")


# ---- 404 / 405 / 406 -------------------------------------------------------------------------


class NotFound(Problem):
    code = "404.1"
    message = lazy_gettext("Could not find what you were looking for.")


class FormNotFound(NotFound):
    code = "404.1"
    message = lazy_gettext(
        "The form %(form_id)s does not exist on this server, or you may not submit to it."
    )


class DraftNotFound(NotFound):
    code = "404.4"
    message = lazy_gettext(
        "This draft no longer exists or your test access has expired. Scan the draft's new QR "
        "code, or use an app user once the form is published."
    )


class DeprecatedIdNotFound(NotFound):
    code = "404.5"
    message = lazy_gettext(
        "This record is an edit of %(deprecated_id)s, which is not on the server."
    )


class FormVersionNotFound(NotFound):
    code = "404.6"
    message = lazy_gettext(
        "Version %(version)s of form %(form_id)s does not exist on this server. Download the "
        "current form and fill the record again, or ask your coordinator."
    )


class CorrectionNotFound(NotFound):
    code = "404.1"
    message = lazy_gettext("There is no correction %(id)s on this form.")


class NoSuchUser(NotFound):
    """No live account has this email."""

    code = "404.1"
    message = lazy_gettext(
        "There is no account with the email %(email)s. Ask an administrator to create it first."
    )


class MethodNotAllowed(Problem):
    code = "405.1"
    message = lazy_gettext("This method is not allowed here.")


class NotAcceptable(Problem):
    code = "406.1"
    message = lazy_gettext("The format asked for is not available; allowed: %(allowed)s.")


# ---- 408 -------------------------------------------------------------------------------------


class UploadTooSlow(Problem):
    # Given up by server.ops.buffering before the view ran: nothing of the body was stored.
    code = "408.1"
    message = lazy_gettext(
        "The upload stopped, or arrived too slowly, and was given up; nothing of it was kept. "
        "Send it again when the connection is better."
    )


# ---- 409 -------------------------------------------------------------------------------------


class Conflict(Problem):
    code = "409.3"
    message = lazy_gettext("Something with %(fields)s %(values)s already exists.")


class XmlConflict(Conflict):
    code = "409.1"
    message = lazy_gettext(
        "A record with this instanceID was already received with different content. It has been "
        "kept for your coordinator to review."
    )


class NotAcceptingSubmissions(Conflict):
    code = "409.2"
    message = lazy_gettext(
        "The form %(form_id)s is closed and no longer accepts records. Talk to your coordinator."
    )


class EncryptionAlreadyActive(Conflict):
    code = "409.4"
    message = lazy_gettext(
        "Managed encryption is already turned on for this project. It cannot be turned on again "
        "or changed."
    )


class VersionConflict(Conflict):
    code = "409.6"
    message = lazy_gettext(
        "Form %(form_id)s already has a published version %(version)s with different content. "
        "Change the version in the settings sheet and upload it again."
    )


class NoPublishedVersion(Conflict):
    code = "409.7"
    message = lazy_gettext("The form has no published version.")


class InstanceIdConflict(Conflict):
    code = "409.8"
    message = lazy_gettext("The instanceID %(instance_id)s already exists on this server.")


class StaleEdit(Conflict):
    code = "409.9"
    message = lazy_gettext(
        "This edit is based on %(deprecated_id)s, which is no longer the current version of the "
        "record. Download the current version and edit it again."
    )


class MissingMedia(Conflict):
    # Not one of Central's codes (Central publishes without media); 409.15 and 409.16 are
    # Central's entity conflicts (server/entities/services.py).
    code = "409.21"
    message = lazy_gettext(
        "The form cannot be published until these files are attached: %(missing)s."
    )


class LastAdministrator(Conflict):
    code = "409.22"
    message = lazy_gettext(
        "This is the last administrator: make someone else an administrator first."
    )


class DeletedSubmission(Conflict):
    code = "409.18"
    message = lazy_gettext("This record was deleted on the server and cannot be sent again.")


class ConflictSettled(Conflict):
    # Not one of Central's (it keeps no conflicts): two coordinators settling the same one.
    code = "409.23"
    message = lazy_gettext("This conflict was already settled: %(resolution)s.")


class EncryptedConflict(Conflict):
    # Its instanceID is sealed in the encrypted record: the server cannot make it an edit.
    code = "409.24"
    message = lazy_gettext(
        "An encrypted record cannot be taken as an edit by the server. Keep the first record "
        "or discard this one, and ask the enumerator to edit the record on the tablet."
    )


class EntityVersionConflict(Conflict):
    code = "409.15"
    message = lazy_gettext(
        "The entity is at version %(current)s and you based your change on version "
        "%(provided)s. Read it again and redo your change, or pass force=true to overwrite it."
    )


class DatasetNameConflict(Conflict):
    code = "409.16"
    message = lazy_gettext(
        "An entity list named %(current)s exists; %(provided)s differs only by capitalisation."
    )


class PropertyNameConflict(Conflict):
    code = "409.17"
    message = lazy_gettext(
        "A property named %(current)s exists; %(provided)s differs only by capitalisation."
    )


class DeletedEntityConflict(Conflict):
    code = "409.19"
    message = lazy_gettext(
        "These UUIDs belong to deleted entities and cannot be used again: %(uuids)s."
    )


# ---- 413 / 416 / 429 -----------------------------------------------------------------------


class PayloadTooLarge(Problem):
    code = "413.1"
    message = lazy_gettext(
        "The upload is too large (%(size)s bytes; the limit is %(limit)s bytes)."
    )


class RecordTooLarge(PayloadTooLarge):
    # What an enumerator reads on the tablet: the one thing they can change is photo size.
    code = "413.2"
    message = lazy_gettext(
        "The upload is too large (%(size)s bytes; the limit is %(limit)s bytes). Reduce the photo "
        "size in the settings (image size) and send again."
    )


class RangeNotSatisfiable(Problem):
    """The Range asked for lies outside the file."""

    code = "416.1"
    message = lazy_gettext("The requested range is outside the file, which has %(size)s bytes.")


class AccountLocked(Problem):
    code = "429.1"
    message = lazy_gettext("Too many failed sign-in attempts. Try again in %(minutes)s minutes.")


class TooManyRequests(Problem):
    code = "429.2"
    message = lazy_gettext("Too many requests. Wait a moment and try again.")


# ---- 501 -------------------------------------------------------------------------------------


class NotImplementedFeature(Problem):
    """What ODK Central's API offers and this server does not (Central's 501 problems)."""

    code = "501.1"
    message = lazy_gettext("The requested feature %(feature)s is not supported by this server.")


class UnsupportedODataExpression(NotImplementedFeature):
    """OData that Central does not implement either (``unsupportedODataExpression``)."""

    code = "501.4"


class UnsupportedODataField(NotImplementedFeature):
    """A field the OData table cannot be filtered on (Central's ``unsupportedODataField``)."""

    code = "501.5"
    message = lazy_gettext("The $filter expression cannot be used: %(reason)s")


class ExpandNotSupported(NotImplementedFeature):
    code = "501.6"
    message = lazy_gettext('The $expand expression "%(text)s" is not supported: only $expand=* is.')


class SelectWithExpand(NotImplementedFeature):
    code = "501.11"
    message = lazy_gettext("$select cannot be used together with $expand.")


# ---- 503 -------------------------------------------------------------------------------------


class Unavailable(Problem):
    code = "503.1"
    message = lazy_gettext(
        "The server cannot store this right now. Your record is safe on the tablet; it will be "
        "sent again automatically."
    )


class DatabaseUnavailable(Unavailable):
    # PostgreSQL restarting or unreachable, SQLite locked past its wait, the pool exhausted:
    # transient, so 503 with Retry-After rather than 500. Whether the request's changes were
    # committed is unknown when a connection drops during COMMIT; a retry is safe either way
    # (intake recognises a record it already has).
    code = "503.4"
    message = lazy_gettext(
        "The server's database is not answering for a moment. Try again shortly; a record that "
        "was not acknowledged stays on the tablet and is sent again automatically."
    )


class UploadsBusy(Unavailable):
    # Refused by server.ops.buffering without reading the body: clients without credentials
    # have a bounded share of the threads (MERIT_ANONYMOUS_BODIES, ..._PER_CLIENT).
    code = "503.5"
    message = lazy_gettext(
        "Too many uploads from clients that are not signed in are being received right now. "
        "Try again in a moment, or sign in."
    )


class AuditUnavailable(Unavailable):
    # Personal data read in clear is audited before it leaves; when the audit log cannot be
    # written, the answer is refused rather than sent unaudited (server/personal.py).
    code = "503.6"
    message = lazy_gettext(
        "This answer holds personal data and its reading could not be recorded in the audit "
        "log. Try again shortly."
    )


class FileUnavailable(Unavailable):
    """The blob store cannot be read now."""

    code = "503.3"
    message = lazy_gettext("This file cannot be read right now. Try again in a few minutes.")


class StorageBusy(Unavailable):
    """The store is unreachable and the spool is full: nothing can be made durable now."""

    code = "503.2"
    message = lazy_gettext(
        "The server cannot store files right now. Your record is safe on the tablet; it will be "
        "sent again automatically."
    )


DATABASE_RETRY_AFTER_SECONDS = 10

# SQLite reports programming errors ("no such table") as OperationalError too; only these are
# the passing kind.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error")


def database_unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """Return the 503 for a database error that goes away by itself, or None for any other."""
    if isinstance(exc, PoolTimeout):
        transient = True
    elif isinstance(exc, OperationalError | InterfaceError):
        text = str(exc.orig if exc.orig is not None else exc).lower()
        is_sqlite = type(exc.orig).__module__.startswith("sqlite3")
        transient = not is_sqlite or any(marker in text for marker in _SQLITE_TRANSIENT)
    else:
        transient = False
    if not transient:
        return None
    return DatabaseUnavailable(headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


# ---- rendering -------------------------------------------------------------------------------

# Which renderer a request's problems use, by blueprint (set by each blueprint at registration).
_RENDERERS: dict[str, Callable[[Problem], Response]] = {}


def set_renderer(blueprint_name: str, renderer: Callable[[Problem], Response]) -> None:
    """Make problems raised in ``blueprint_name``'s views render with ``renderer``."""
    _RENDERERS[blueprint_name] = renderer


def render_json(problem: Problem) -> Response:
    """Render a problem as Central's JSON error body."""
    response = jsonify(problem.to_json())
    response.status_code = problem.status
    response.headers.update(problem.headers)
    return response


def render_html(problem: Problem) -> Response:
    """Render a problem as a small page (the console replaces this with its own template)."""
    body = render_template_string(
        "<!doctype html><html lang='{{ lang }}'><meta charset='utf-8'>"
        "<title>{{ status }}</title><h1>{{ status }}</h1><p>{{ message }}</p></html>",
        status=problem.status,
        message=problem.render_message(),
        lang=_lang(),
    )
    response = Response(body, status=problem.status, content_type="text/html; charset=utf-8")
    response.headers.update(problem.headers)
    return response


def _lang() -> str:
    try:
        from flask_babel import get_locale

        return str(get_locale() or "fr")
    except Exception:  # outside a request
        return "fr"


def _pick_renderer() -> Callable[[Problem], Response]:
    renderer = getattr(g, "problem_renderer", None)
    if renderer is not None:
        return renderer
    blueprint = request.blueprint or ""
    # Nested blueprints are named "parent.child": try the most specific first.
    while blueprint:
        if blueprint in _RENDERERS:
            return _RENDERERS[blueprint]
        blueprint = blueprint.rpartition(".")[0]
    if request.path.startswith("/v1/") or request.path.endswith(".json"):
        return render_json
    return render_html


def render(problem: Problem) -> Response:
    """Render a problem the way the current request's client understands."""
    return _pick_renderer()(problem)


def register(app: Flask) -> None:
    """Install the handlers that turn every error into a rendered problem, never a traceback."""

    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> Response:
        if problem.status >= 500:
            log.warning("problem %s: %s", problem.code, problem.render_message())
        return render(problem)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc: RequestEntityTooLarge) -> Response:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        kind = RecordTooLarge if request.blueprint == "openrosa" else PayloadTooLarge
        return render(kind(size=request.content_length or "?", limit=limit))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        problem: Problem
        if status == 404:
            problem = NotFound()
        elif status == 405:
            problem = MethodNotAllowed()
        elif status == 400:
            problem = BadRequest(reason=exc.description or "bad request")
        elif status == 413:
            return _too_large(RequestEntityTooLarge())
        elif status == 431:
            problem = BadRequest(code="431.1", reason="request headers too large")
        else:
            problem = Problem(code=f"{status}.1")
            problem.message = exc.description or exc.name
        return render(problem)

    @app.before_request
    def _refuse_nul_bytes() -> None:
        # A NUL byte has no place in a path or a query, and PostgreSQL cannot store one in a
        # text column: refuse it at the door rather than fail deep inside (a 500).
        if "\x00" in request.path or "\x00" in request.query_string.decode("latin-1"):
            raise HostileInput(reason="the address contains a NUL byte")

    @app.errorhandler(DataError)
    def _unstorable(_exc: DataError) -> Response:
        # A value the database cannot hold (a NUL byte in text, a number out of range):
        # the client sent it, so it is the client's problem to hear about.
        return render(UnexpectedValue(field="value", reason="it cannot be stored"))

    @app.errorhandler(OverflowError)
    def _overflow(exc: OverflowError) -> Response:
        # SQLite's DataError: a number beyond its 64-bit integers is refused by the driver with
        # OverflowError (PostgreSQL's gives DataError, above). Values clients send are bounded
        # where they are read (server/bounds.py); this keeps a reader that forgot from being a
        # 500 on one database and a 400 on the other. Logged whole: it is a bug to fix there.
        log.warning("overflow on %s %s", request.method, request.path, exc_info=exc)
        return render(UnexpectedValue(field="value", reason="it is out of range"))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _database(exc: Exception) -> Response:
        problem = database_unavailable(exc)
        if problem is None:
            return _unexpected(exc)
        first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[:1]
        log.warning(
            "database unavailable on %s %s: %s", request.method, request.path, "".join(first_line)
        )
        return render(problem)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The traceback goes to the log, with the request id; the client gets a stable message.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render(Problem())
