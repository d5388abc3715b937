"""Problem codes and their JSON form."""

from __future__ import annotations

import inspect
import sqlite3

from sqlalchemy import exc as sa_exc

from server import errors


def all_problem_classes():
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.Problem)
    ]


def test_no_code_minor_ends_in_zero_so_json_numbers_stay_distinct():
    for cls in all_problem_classes():
        _, _, minor = cls.code.partition(".")
        assert minor and not minor.endswith("0"), cls.__name__


def test_status_is_the_integer_part_of_the_code():
    assert errors.XmlConflict().status == 409
    assert errors.FormVersionNotFound(version="3", form_id="x").status == 404
    assert errors.PayloadTooLarge(size=1, limit=0).status == 413


def test_json_body_has_code_message_and_details(bare_app):
    with bare_app.test_request_context("/v1/x"):
        body = errors.Conflict(fields="email", values="a@b.org").to_json()
    assert body["code"] == 409.3
    assert "a@b.org" in body["message"]
    assert body["details"] == {"fields": "email", "values": "a@b.org"}


def test_a_problem_can_be_raised_outside_a_request(bare_app):
    with bare_app.app_context():
        problem = errors.NotFound()
    assert problem.status == 404
    assert problem.render_message()


def test_each_code_means_one_thing_across_the_whole_server(bare_app):
    # Importing the app imports every module that defines problems.
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    by_code: dict[str, list[type]] = {}
    for cls in subclasses(errors.Problem):
        by_code.setdefault(cls.code, []).append(cls)
    clashes = []
    for code, classes in by_code.items():
        for a in classes:
            for b in classes:
                related = a is b or issubclass(a, b) or issubclass(b, a)
                # Siblings may share a code only when both refine a class with that code.
                common = any(issubclass(a, p) and issubclass(b, p) for p in classes)
                if not related and not common:
                    clashes.append((code, a.__qualname__, b.__qualname__))
    assert not clashes, clashes


def _operational(orig: BaseException) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


def test_a_database_that_is_away_or_busy_is_503_with_retry_after():
    for exc in (
        _operational(sqlite3.OperationalError("database is locked")),
        _operational(sqlite3.OperationalError("disk I/O error")),
        _operational(ConnectionRefusedError("connection refused")),  # any PostgreSQL driver's
        sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
    ):
        problem = errors.database_unavailable(exc)
        assert problem is not None, exc
        assert problem.code == "503.4"
        assert problem.headers == {"Retry-After": str(errors.DATABASE_RETRY_AFTER_SECONDS)}


def test_a_programming_error_sqlite_calls_operational_stays_a_500():
    no_table = _operational(sqlite3.OperationalError("no such table: x"))
    assert errors.database_unavailable(no_table) is None
    assert errors.database_unavailable(RuntimeError("database is locked")) is None
