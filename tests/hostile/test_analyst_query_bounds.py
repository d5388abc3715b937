"""Any signed-in reader can write a query string: none of it may make the server answer 500.

Hole 8 of issue 16: ``$filter`` with 400 nested parentheses, and ``$skip``, ``limit`` or
``offset`` of 1e20, answered 500. Numbers and dates are read in one place (server/bounds.py)
and the OData parser bounds its nesting; these tests hold that:

* the holes found, each refused with a 400 naming what is wrong;
* a walk of every GET route of ``app.url_map``: each route is visited once to learn which query
  parameters it reads (the request's ``args`` record the names asked for; the exports, which
  read them all, ask the export options' reader), then each of them gets hostile values;
* every ``<int:...>`` of a path given a number no database holds: a 404 (or 405), as any
  unknown path.

They run in-process with the test client, as the administrator (who reaches every route); an
analyst reaches a subset of the same code.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import ClassVar
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from werkzeug.datastructures import ImmutableMultiDict

from server.exports.options import parse_options
from tests.support import factories
from tests.support.openrosa import (
    FORM_ID,
    OPENROSA,
    VERSION,
    jpeg,
    multipart,
    new_instance_id,
    publish_form,
    record,
)

PHOTO = "1715090512345.jpg"
HUGE = "100000000000000000000"  # 1e20: beyond SQLite's and PostgreSQL's 64-bit integers


def _token(payload: object) -> str:
    """Return a cursor or ``$skiptoken`` wrapped as the server wraps its own (base64 JSON)."""
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


DEEP_JSON = _token("[" * 100_000 + "]" * 100_000)
NESTED = "(" * 400 + "{field} eq 'x'" + ")" * 400
NEGATED = "not " * 400 + "{field} eq 'x'"

# What every parameter a route reads is sent: numbers no database holds, digits Python's int()
# reads but nobody means, dates a day or a time zone away from the end of Python's calendar.
VALUES = [HUGE, "-" + HUGE, "\u0661\u0662", "9999-12-31", "0001-01-01T00:00:00+14:00"]
# And what the parameters carrying expressions or tokens are sent besides.
SPECIAL = {
    "$filter": [
        NESTED.format(field="__id"),
        NEGATED.format(field="__id"),
        NESTED.format(field="label"),
        f"__system/submitterId eq {HUGE}",
        f"year(__system/submissionDate) eq -{HUGE}",
        "__system/submitterId eq " + "9" * 400 + ".5",
    ],
    "$skiptoken": [
        DEEP_JSON,
        _token({"o": "-seq", "s": 10**20}),
        _token({"o": "rows", "s": 10**20, "i": 10**20}),
        _token({"o": "entities", "id": 10**20}),
    ],
    "cursor": [
        DEEP_JSON,
        _token({"o": "seq", "s": 10**20}),
        _token({"o": "seq", "s": -1}),
    ],
}

# The holes as found: (route, parameter, value), each refused with a 400 naming the parameter.
HOLES = [
    ("/v1/projects/{p}/forms/{f}/submissions", "limit", HUGE),
    ("/v1/projects/{p}/forms/{f}/submissions", "offset", HUGE),
    ("/v1/projects/{p}/forms/{f}/submissions", "offset", "9223372036854775808"),
    ("/v1/projects/{p}/forms/{f}/submissions", "limit", "\u0661\u0662"),
    ("/v1/projects/{p}/forms/{f}/submissions", "limit", "1e3"),
    ("/v1/projects/{p}/forms/{f}/submissions", "limit", "0x10"),
    ("/v1/projects/{p}/forms/{f}/submissions", "offset", "-1"),
    ("/v1/projects/{p}/forms/{f}.svc/Submissions", "$skip", HUGE),
    ("/v1/projects/{p}/forms/{f}.svc/Submissions", "$top", HUGE),
    ("/v1/projects/{p}/datasets/villages.svc/Entities", "$skip", HUGE),
    ("/v1/audits", "offset", HUGE),
    ("/v1/audits", "end", "9999-12-31"),
    ("/v1/audits", "start", "0001-01-01T00:00:00+14:00"),
    ("/v1/projects/{p}/forms/{f}/submissions.csv", "submitterId", HUGE),
    ("/v1/projects/{p}/forms/{f}/submissions.csv.zip", "end", "9999-12-31"),
]
FILTER_HOLES = [
    ("/v1/projects/{p}/forms/{f}.svc/Submissions", NESTED.format(field="__id")),
    ("/v1/projects/{p}/forms/{f}.svc/Submissions", NEGATED.format(field="__id")),
    ("/v1/projects/{p}/forms/{f}.svc/Submissions", f"__system/submitterId eq {HUGE}"),
    ("/v1/projects/{p}/forms/{f}/submissions.csv", NESTED.format(field="__id")),
    ("/v1/projects/{p}/datasets/villages.svc/Entities", NESTED.format(field="label")),
    ("/v1/projects/{p}/datasets/villages.svc/Entities", NEGATED.format(field="label")),
]
CONSOLE_HOLES = [
    ("/projects/{p}/forms/{f}/submissions", "before", HUGE),
    ("/projects/{p}/forms/{f}/submissions", "submitter", HUGE),
    ("/projects/{p}/forms/{f}/submissions", "to", "9999-12-31"),
    ("/audit", "project", HUGE),
    ("/projects/{p}/forms/{f}/export/download", "submitterId", HUGE),
    ("/projects/{p}/forms/{f}/export/download", "end", "9999-12-31"),
]

# The walk must reach where the holes were, so that it cannot pass by reaching nothing.
MUST_PROBE = {
    ("api.list_submissions", "limit"),
    ("api.list_submissions", "offset"),
    ("api.list_submissions", "cursor"),
    ("api.odata_table", "$top"),
    ("api.odata_table", "$skip"),
    ("api.odata_table", "$filter"),
    ("api.odata_table", "$skiptoken"),
    ("api.entities_table", "$filter"),
    ("api.entities_table", "$skiptoken"),
    ("api.server_audits", "offset"),
    ("api.export_csv", "submitterId"),
    ("api.export_csv", "$filter"),
    ("web.submission_list", "before"),
    ("web.audit_log", "project"),
    ("web.export_download", "end"),
}

EVERY = "*"  # the route reads every parameter it is given (it iterates over them)


class _Recording(ImmutableMultiDict):
    """Query arguments that remember which names were asked for."""

    asked: ClassVar[set[str]] = set()

    def get(self, key, default=None, type=None):
        self.asked.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):
        self.asked.add(key)
        return super().getlist(key, type)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)

    def items(self, multi=False):
        self.asked.add(EVERY)
        return super().items(multi)


def _export_option_names() -> set[str]:
    """The names the export options' one reader asks for (what the exports read of all)."""
    _Recording.asked = set()
    parse_options(_Recording())
    return _Recording.asked - {EVERY}


@pytest.fixture
def stage(app: Flask, client, db_session) -> dict:
    """A project with a form, a record with a photo, an entity list and a signed-in admin."""
    project = factories.project(db_session)
    admin = factories.user(db_session, "admin@example.org", role="admin")
    device, token = factories.app_user(db_session, project.id, "Tablette")
    form = publish_form(db_session, project.id, app_user_ids=(device.actor_id,))
    instance_id = new_instance_id()
    sent = client.post(
        f"/v1/key/{token}/projects/{project.id}/submission",
        data=multipart(record(instance_id, audit=None), {PHOTO: jpeg(1)}),
        headers=OPENROSA,
    )
    assert sent.status_code == 201, sent.text
    conflicting = client.post(  # the same instanceID with other answers: a conflict
        f"/v1/key/{token}/projects/{project.id}/submission",
        data=multipart(record(instance_id, age="35", audit=None), {PHOTO: jpeg(1)}),
        headers=OPENROSA,
    )
    assert conflicting.status_code == 409, conflicting.text
    bearer = client.post(
        "/v1/sessions", json={"email": admin.email, "password": factories.PASSWORD}
    ).json["token"]
    headers = {"Authorization": f"Bearer {bearer}"}
    base = f"/v1/projects/{project.id}"
    for url, body in (
        (f"{base}/datasets", {"name": "villages"}),
        (f"{base}/datasets/villages/properties", {"name": "region"}),
    ):
        assert client.post(url, json=body, headers=headers).status_code == 200
    entity = client.post(
        f"{base}/datasets/villages/entities",
        json={"label": "Ségou", "data": {"region": "ML04"}},
        headers=headers,
    )
    assert entity.status_code == 200, entity.text
    browser = app.test_client()
    page = browser.get("/login")
    login = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    signed = browser.post(
        "/login",
        data={"email": admin.email, "password": factories.PASSWORD, "login_token": login},
    )
    assert signed.status_code == 303, signed.text
    return {
        "headers": headers,
        "cookie": f"merit_session={browser.get_cookie('merit_session').value}",
        "values": {
            "project_id": project.id,
            "xml_form_id": FORM_ID,
            "instance_id": instance_id,
            "version_id": instance_id,
            "version": VERSION,
            "name": PHOTO,
            "subpath": "Submissions",
            "uuid": entity.json["uuid"],
            "actor_id": admin.actor_id,
            "role": "admin",
            "code": "en",
            "filename": "console.css",
            "conflict_id": _conflict_id(client, headers, project.id),
        },
        "form_version_id": form.current_version_id,
    }


def _conflict_id(client, headers: dict[str, str], project_id: int) -> int:  # type: ignore[no-untyped-def]
    listed = client.get(f"/v1/projects/{project_id}/forms/{FORM_ID}/conflicts", headers=headers)
    assert listed.status_code == 200, listed.text
    return listed.json[0]["id"]


def _routes(app: Flask, stage: dict, **override: object) -> list[tuple[str, str]]:
    """Every GET route as (endpoint, path), the stage's objects in its variables."""
    routes = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        values = dict(stage["values"])
        if rule.endpoint.startswith("web.download_"):
            values["version_id"] = stage["form_version_id"]
        if "dataset" in rule.endpoint or "entit" in rule.endpoint:
            values["name"] = "villages"
        if rule.endpoint.endswith("attachment") and "submission" not in rule.rule:
            values["name"] = "villages.csv"
        for name in re.findall(r"<int:([^<>]+)>", rule.rule):
            values[name] = override.get(name, values[name])
        path = re.sub(
            r"<(?:[^:<>]+:)?([^<>]+)>",
            lambda match, values=values: quote(str(values[match[1]]), safe=":"),
            rule.rule,
        )
        routes.append((rule.endpoint, path))
    return routes


def _get(app: Flask, stage: dict, path: str, query: dict[str, str] | None = None):
    """GET as the administrator (the console's cookie, the API's bearer token); read it all."""
    console = not path.startswith("/v1/")
    headers = {"Cookie": stage["cookie"]} if console else stage["headers"]
    url = path + ("?" + urlencode(query) if query else "")
    response = app.test_client(use_cookies=False).get(url, headers=headers)
    response.get_data()  # an answer that streams fails while it streams
    response.close()
    return response


def _status(app: Flask, stage: dict, path: str, query: dict[str, str] | None = None) -> int:
    try:
        return _get(app, stage, path, query).status_code
    except Exception:  # the test client raises what a streamed answer raised: a broken download
        return 500


def _url(template: str, stage: dict) -> str:
    values = stage["values"]
    return template.format(p=values["project_id"], f=values["xml_form_id"])


def test_numbers_and_dates_no_database_holds_are_refused_with_a_400_naming_them(app, stage):
    for template, name, value in HOLES:
        answer = _get(app, stage, _url(template, stage), {name: value})
        where = f"{template}?{name}={value}"
        assert answer.status_code == 400, f"{where}: {answer.status_code}"
        assert answer.json["details"]["field"] == name, where
        assert answer.json["message"], where


def test_filters_nested_too_deep_or_holding_huge_numbers_are_refused_as_central_does(app, stage):
    for template, text in FILTER_HOLES:
        answer = _get(app, stage, _url(template, stage), {"$filter": text})
        where = f"{template}?$filter={text[:40]}"
        assert answer.status_code == 400, f"{where}: {answer.status_code}"
        assert answer.json["code"] == 400.18, where


def test_the_console_refuses_the_same_values_with_a_page_naming_the_field(app, stage):
    for template, name, value in CONSOLE_HOLES:
        answer = _get(app, stage, _url(template, stage), {name: value})
        where = f"{template}?{name}={value}"
        assert answer.status_code == 400, f"{where}: {answer.status_code}"
        assert answer.mimetype == "text/html", where


def test_paging_tokens_that_are_not_the_servers_are_refused_with_400_35(app, stage):
    for template, name, value in (
        [("/v1/projects/{p}/forms/{f}/submissions", "cursor", value) for value in SPECIAL["cursor"]]
        + [
            ("/v1/projects/{p}/forms/{f}.svc/Submissions", "$skiptoken", value)
            for value in SPECIAL["$skiptoken"][:3]
        ]
        + [
            ("/v1/projects/{p}/datasets/villages.svc/Entities", "$skiptoken", value)
            for value in (DEEP_JSON, SPECIAL["$skiptoken"][3])
        ]
    ):
        answer = _get(app, stage, _url(template, stage), {name: value})
        assert answer.status_code == 400, f"{template}?{name}={value[:40]}: {answer.status_code}"
        assert answer.json["code"] == 400.35


@pytest.fixture
def recording_app(app: Flask) -> Iterator[Flask]:
    """The application, each request's query arguments recording the names read."""
    original = app.request_class
    app.request_class = type("Recording", (original,), {"parameter_storage_class": _Recording})
    yield app
    app.request_class = original


def test_no_query_value_makes_any_get_route_fail(recording_app, stage):
    app = recording_app
    reads: dict[tuple[str, str], set[str]] = {}
    for endpoint, path in _routes(app, stage):
        _Recording.asked = set()
        baseline = _status(app, stage, path)
        assert baseline < 500, f"{path}: {baseline}"
        reads[endpoint, path] = set(_Recording.asked)
    options = _export_option_names()
    probed: set[tuple[str, str]] = set()
    failures: list[str] = []
    for (endpoint, path), names in reads.items():
        if EVERY in names:
            names = (names - {EVERY}) | options | {HUGE}  # a key id's passphrase: {keyId}=...
        for name in sorted(names):
            probed.add((endpoint, name))
            for value in [*VALUES, *SPECIAL.get(name, [])]:
                status = _status(app, stage, path, {name: value})
                # 501: OData that ODK Central does not implement either (its 501.4 and 501.5).
                if status >= 500 and status != 501:
                    failures.append(f"{status} {endpoint} {name}={value[:40]!r}")
    assert probed >= MUST_PROBE, sorted(MUST_PROBE - probed)
    assert not failures, "\n".join(failures)


def test_a_path_number_no_database_holds_names_nothing(app, stage):
    huge = {name: HUGE for name in ("project_id", "actor_id", "version_id", "conflict_id")}
    paths = [path for _endpoint, path in _routes(app, stage, **huge) if HUGE in path]
    assert len(paths) > 10
    for path in paths:
        # 405 where another rule takes the same path with other methods.
        assert _status(app, stage, path) in (404, 405), path
