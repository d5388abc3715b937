"""What a tablet (or anyone) uploaded is never served as a page of the console (issue 16, hole 1).

Every answer of the application carries ``X-Content-Type-Options: nosniff`` and, unless it is
a page the console rendered, ``Content-Security-Policy: default-src 'none'; sandbox``: a
record's XML, a form's XML and workbook, attachments, form media, exports, entity lists, and
every error. The walk goes through every GET route of the application (``app.url_map``, each
filled with a real object by the route matrix's site, tests/integration/test_route_matrix.py,
whose own test fails when a route is not in its matrix), as a principal who may read it and as
ones who may not, so that a new route serving content without the headers fails here.

A bucket's answer to a presigned URL carries neither header: the bucket is asked to hand over
as a download (``attachment``) everything but images, audio and video.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import make_app
from tests.integration.test_route_matrix import DEVICES, build_site, send, walk
from tests.integration.test_storage_downloads import add_download_view, store_blob
from tests.support import s3

pytestmark = pytest.mark.slow

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket

SANDBOX = "default-src 'none'; sandbox"


# Console routes that serve files (uploaded, or built from uploads): never a console page.
CONSOLE_FILES = {
    "web.download_xform",
    "web.download_source",
    "web.download_media",
    "web.submission_attachment",
    "web.export_download",
}


# Pages holding ODK Web Forms: the console's policy plus what the form engine needs (its
# WebAssembly, its inline styles); scripts still only from the server.
WEBFORM_PAGES = {"web.fill", "web.fill_draft", "web.edit_submission", "web.public_form"}


def _directives(policy: str) -> dict[str, str]:
    found = (part.strip().partition(" ") for part in policy.split(";"))
    return {name: value for name, _sep, value in found}


def unsafe(what: str, endpoint: str, response) -> str | None:  # type: ignore[no-untyped-def]
    """Return what is wrong with the answer's headers (None when it is served safely).

    Everything is sandboxed but the console's own pages, which carry the console's strict
    policy instead: an answer that is not sandboxed must be an HTML page of a console route
    that is not a download (a console route serving a file may answer a problem page).
    """
    said = f"{what} [{endpoint}] {response.status_code} {response.mimetype}"
    if response.headers.get("X-Content-Type-Options") != "nosniff":
        return f"{said}: no X-Content-Type-Options: nosniff"
    policy = response.headers.get("Content-Security-Policy", "")
    if policy == SANDBOX:
        return None
    console_page = (
        endpoint.startswith("web.")
        and (endpoint not in CONSOLE_FILES or response.status_code >= 400)  # a problem page
        and response.mimetype == "text/html"
        and not response.headers.get("Content-Disposition", "").startswith("attachment")
    )
    directives = _directives(policy)
    strict = (
        directives.get("default-src") == "'self'"
        and directives.get("script-src") == "'self'"
        and directives.get("frame-ancestors") == "'none'"
        and "unsafe-" not in policy
    )
    if endpoint in WEBFORM_PAGES and not strict:  # (a refusal there is a plain console page)
        # WebAssembly may be compiled, styles may be inline; no eval, no inline script.
        strict = (
            directives.get("default-src") == "'self'"
            and directives.get("script-src") == "'self' 'wasm-unsafe-eval'"
            and directives.get("style-src") == "'self' 'unsafe-inline'"
            and directives.get("object-src") == "'none'"
            and directives.get("frame-ancestors") == "'none'"
            and policy.count("unsafe-") == 2
        )
    if console_page and strict:
        return None
    return f"{said}: Content-Security-Policy {policy!r}, not {SANDBOX!r}"


# admin reads everything of the site; a tablet reaches /v1 with its token (OpenRosa form and
# media downloads); anonymous and another project's coordinator get refusals and redirects.
@pytest.mark.parametrize("principal", ["admin", "device", "other_manager", "anonymous"])
def test_every_get_route_answers_with_nosniff_and_a_sandbox_unless_a_console_page(
    app, client, db_session, principal
):
    site = build_site(app, client, db_session, principal)
    checks = [
        check
        for check in walk(app)
        if check.method in ("GET", "HEAD")
        and (principal not in DEVICES or check.rule.startswith("/v1/"))
    ]
    # The walk covers every GET route of the application (a device: those under /v1).
    served = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and (principal not in DEVICES or rule.rule.startswith("/v1/"))
    }
    assert served <= {check.rule for check in checks}
    wrong = []
    statuses = set()
    for check in checks:
        response = send(app, check, site, principal)
        statuses.add(response.status_code)
        problem = unsafe(f"{check.method} {check.rule} as {principal}", check.endpoint, response)
        if problem is not None:
            wrong.append(problem)
    assert not wrong, f"{len(wrong)} of {len(checks)} answers:\n" + "\n".join(wrong)
    if principal in ("admin", "device"):
        assert 200 in statuses  # the walk read real content, not only refusals


def test_errors_and_unknown_addresses_are_sandboxed_too(client):
    for path in ("/nowhere", "/v1/nowhere", "/v1/projects/1/forms/x.xml", "/projects/1/x"):
        response = client.get(path)
        assert response.status_code in (303, 401, 404), (path, response.status_code)
        endpoint = "web.unknown" if not path.startswith("/v1/") else "api.unknown"
        assert unsafe(f"GET {path}", endpoint, response) is None, path
    # A method the route does not take, and a body too large: answered before any view.
    assert unsafe("POST /healthz", "health", client.post("/healthz")) is None


@pytest.mark.parametrize(
    "content_type, disposition",
    [
        ("image/jpeg", "inline"),
        ("audio/mp4", "inline"),
        ("video/mp4", "inline"),
        # Shown inline by the server itself, with nosniff and the sandbox: from the bucket,
        # which sends neither, a download.
        ("application/pdf", "attachment"),
        ("application/json", "attachment"),
    ],
)
def test_presigned_urls_hand_over_only_images_sound_and_video_inline(
    database_url, tmp_path, s3_bucket, content_type, disposition
):
    app = make_app(
        database_url,
        tmp_path,
        STORAGE_URL=f"s3://{s3_bucket}/attachments",
        S3_PRESIGNED_DOWNLOADS=True,
    )
    add_download_view(app)
    blob_id = store_blob(app)
    client = app.test_client()
    response = client.get(f"/files/{blob_id}", query_string={"type": content_type, "inline": "1"})
    assert response.status_code == 307
    direct = requests.get(response.headers["Location"], timeout=10)
    assert direct.status_code == 200
    assert direct.headers["Content-Type"] == content_type
    assert direct.headers["Content-Disposition"].startswith(f"{disposition};")
    # Types a browser could run never go to the bucket: streamed, with the headers.
    html = client.get(f"/files/{blob_id}", query_string={"type": "text/html", "inline": "1"})
    assert html.status_code == 200
    assert html.headers["Content-Disposition"].startswith("attachment;")
    assert unsafe("GET /files (text/html)", "files", html) is None
