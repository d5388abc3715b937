"""An anonymous client on the network replays a Digest header it captured.

ODK Collect signs in with HTTP Digest over plain HTTP when a server has no TLS (openrosa.md §5).
Someone on the same Wi-Fi sees each request's ``Authorization`` header; the password stays
hidden, but the header itself was accepted again later: a captured submission's header sent
with another body stored a forged record under the data collector's name. Each header now
works once: ``nc`` must grow for its nonce (RFC 7616 §3.4), the counts live in the database so
that every worker and every server process on it agrees, and a replay gets a 401 with a fresh
challenge (``stale=true``, so that Collect, whose request was merely overtaken, retries on its
own instead of asking for the password).
"""

from __future__ import annotations

import re

import pytest
import requests
from requests.auth import HTTPDigestAuth
from urllib3 import encode_multipart_formdata

from tests.support.servers import ServerProcess
from tests.support.site import FORM_ID, PASSWORD, household_record

pytestmark = pytest.mark.slow

OPENROSA = {"X-OpenRosa-Version": "1.0"}


def multipart(xml: bytes) -> tuple[bytes, dict[str, str]]:
    body, content_type = encode_multipart_formdata(
        [("xml_submission_file", ("record.xml", xml, "text/xml"))]
    )
    return body, {"Content-Type": content_type, **OPENROSA}


def collect(site) -> requests.Session:
    """A client answering Digest challenges as Collect does (nonce reused, nc counting up)."""
    tablet = requests.Session()
    tablet.auth = HTTPDigestAuth(site.emails["formfill"], PASSWORD)
    tablet.headers.update(OPENROSA)
    return tablet


def nonce_of(challenge: str) -> str:
    return re.search(r'nonce="([^"]+)"', challenge).group(1)


def test_a_captured_submission_header_cannot_send_another_record(site):
    submission = f"{site.url}/v1/projects/{site.project_id}/submission?deviceID=collect%3Ax"
    tablet = collect(site)
    assert tablet.head(submission, timeout=30).status_code == 204
    body, headers = multipart(household_record(name="Awa Traoré"))
    sent = tablet.post(submission, data=body, headers=headers, timeout=60)
    assert sent.status_code == 201, sent.text
    captured = sent.request.headers["Authorization"]
    stored = site.count("submissions")

    body, headers = multipart(household_record(name="Forged by a replay"))
    replayed = requests.post(
        submission, data=body, headers={**headers, "Authorization": captured}, timeout=60
    )
    assert replayed.status_code == 401
    challenge = replayed.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ") and "stale=true" in challenge
    assert nonce_of(challenge) != nonce_of(captured)
    assert site.count("submissions") == stored

    # The data collector's next request (same nonce, next nc) goes through at the first try.
    body, headers = multipart(household_record(name="Kadiatou Diallo"))
    following = tablet.post(submission, data=body, headers=headers, timeout=60)
    assert following.status_code == 201 and following.history == []
    assert site.count("submissions") == stored + 1


def test_a_replayed_header_is_refused_by_every_server_process_on_the_database(site, tmp_path):
    form_list = f"{site.url}/v1/projects/{site.project_id}/formList"
    tablet = collect(site)
    listed = tablet.get(form_list, timeout=30)
    assert listed.status_code == 200 and FORM_ID in listed.text
    captured = listed.request.headers["Authorization"]
    # A second server process, as behind a balancer: same database, same secret key.
    env = {
        key: value
        for key, value in site.server.env.items()
        if key.startswith("MERIT_") and key != "MERIT_PORT"
    }
    env.update(
        MERIT_DATA_DIR=str(tmp_path / "var"),
        MERIT_STORAGE_URL=str(site.data_dir / "blobs"),
        MERIT_SECRET_KEY=(site.data_dir / "secret_key").read_text().strip(),
    )
    with ServerProcess(env, log_path=tmp_path / "second.log") as second:
        elsewhere = form_list.replace(site.url, second.url)
        replayed = requests.get(
            elsewhere, headers={**OPENROSA, "Authorization": captured}, timeout=30
        )
        assert replayed.status_code == 401
        assert FORM_ID not in replayed.text
        assert "stale=true" in replayed.headers["WWW-Authenticate"]
        # The same client, its nonce counting on, is welcome on either process.
        for url in (elsewhere, form_list, elsewhere):
            answer = tablet.get(url, timeout=30)
            assert answer.status_code == 200 and answer.history == [], url


def test_an_older_header_of_the_same_nonce_is_refused_too(site):
    """A header whose nc is below one already seen is a replay as much as an exact copy."""
    form_list = f"{site.url}/v1/projects/{site.project_id}/formList"
    tablet = collect(site)
    first = tablet.get(form_list, timeout=30)
    second = tablet.get(form_list, timeout=30)
    assert first.status_code == second.status_code == 200
    older = first.request.headers["Authorization"]
    replayed = requests.get(form_list, headers={**OPENROSA, "Authorization": older}, timeout=30)
    assert replayed.status_code == 401 and FORM_ID not in replayed.text
