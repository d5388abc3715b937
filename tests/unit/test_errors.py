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


def every_problem_of_the_server() -> list[type[errors.Problem]]:
    """Every Problem class (call with the app built: it imports every module defining one)."""

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return list(subclasses(errors.Problem))


def test_each_code_means_one_thing_across_the_whole_server(bare_app):
    by_code: dict[str, list[type]] = {}
    for cls in every_problem_of_the_server():
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


def test_a_problems_status_is_the_status_of_its_branch(bare_app):
    """``UnsupportedODataField`` is 501.5: it refines the 501 branch, not a 400 (issue 17)."""
    wrong = [
        (cls.__qualname__, cls.code, base.__qualname__, base.code)
        for cls in every_problem_of_the_server()
        for base in cls.__bases__
        if base is not errors.Problem
        and issubclass(base, errors.Problem)
        and cls().status != base().status
    ]
    assert not wrong, wrong


def test_no_two_problems_share_a_name(bare_app):
    by_name: dict[str, list[str]] = {}
    for cls in every_problem_of_the_server():
        by_name.setdefault(cls.__name__, []).append(cls.__module__)
    assert not {name: where for name, where in by_name.items() if len(where) > 1}


def test_the_501_branch_holds_what_odata_does_not_implement():
    assert errors.UnsupportedODataField(reason="x").status == 501
    assert issubclass(errors.UnsupportedODataField, errors.NotImplementedFeature)
    assert issubclass(errors.UnsupportedODataExpression, errors.NotImplementedFeature)
    assert "NotImplementedFeature" in (errors.__doc__ or "")


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


def test_every_problem_of_the_server_is_in_the_one_table(bare_app):
    """Issue 17: the codes a client can meet are listed in one module, server/errors.py."""
    elsewhere = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in every_problem_of_the_server()
        if cls.__module__ != "server.errors" and not cls.__module__.startswith("tests.")
    )
    assert not elsewhere, f"move these into server/errors.py: {elsewhere}"
