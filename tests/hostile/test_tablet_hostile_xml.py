"""A tablet's token can send any XML as a record: a DTD is refused in whatever encoding it is.

Hole 8 of issue 16: records were refused for a DTD by a byte search for ``<!DOCTYPE``, which a
record written in UTF-16 hides (every other byte is zero); the record was parsed and stored.
The server's one XML rule (server/safexml.py) now also checks the parsed document, whatever
its encoding, for records through OpenRosa and through the REST API alike; and a record must be
UTF-8, as ODK Collect writes it, since it is stored and served as text. Each is refused with a
4xx saying why, nothing is stored, and the server keeps serving.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.site import FORM_ID, household_record

pytestmark = pytest.mark.slow

ENTITIES = (
    '<!DOCTYPE household [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
)


def _with_dtd(instance_id: str) -> str:
    """A household record whose DTD declares entities, used in its name and village."""
    text = household_record(instance_id, name="&lol3;").decode("utf-8")
    text = text.replace("<village>segou</village>", "<village>&secret;</village>")
    return text.replace('<?xml version="1.0" ?>', "", 1)


def _encodings(instance_id: str) -> dict[str, bytes]:
    body = _with_dtd(instance_id)
    return {
        "UTF-16 with a byte order mark": (ENTITIES + body).encode("utf-16"),
        "UTF-16BE declared, no byte order mark": (
            '<?xml version="1.0" encoding="UTF-16BE"?>' + ENTITIES + body
        ).encode("utf-16-be"),
        "UTF-32 with a byte order mark": (ENTITIES + body).encode("utf-32"),
    }


KINDS = list(_encodings("uuid:x"))


def _still_serving(site) -> None:
    sent = site.submit(household_record())
    assert sent.status_code == 201, sent.text


@pytest.mark.parametrize("kind", KINDS)
def test_a_dtd_hidden_by_the_encoding_is_refused_through_openrosa(site, kind):
    before = site.count("submission_versions")
    answer = site.submit(_encodings(f"uuid:{uuid.uuid4()}")[kind])
    assert answer.status_code == 400, answer.text
    assert "<OpenRosaResponse" in answer.text and "DOCTYPE" in answer.text
    assert "root:" not in answer.text  # nothing of /etc/passwd
    assert site.count("submission_versions") == before
    _still_serving(site)


@pytest.mark.parametrize("kind", KINDS)
def test_a_dtd_hidden_by_the_encoding_is_refused_through_the_rest_api(site, kind):
    before = site.count("submission_versions")
    answer = site.api("formfill").post(
        f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions",
        data=_encodings(f"uuid:{uuid.uuid4()}")[kind],
        headers={"Content-Type": "application/xml"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 400.31  # hostile input
    assert site.count("submission_versions") == before
    _still_serving(site)


def test_a_record_in_utf16_is_refused_rather_than_stored_garbled(site):
    before = site.count("submission_versions")
    record = household_record().decode("utf-8").replace('<?xml version="1.0" ?>', "", 1)
    answer = site.submit(record.encode("utf-16"))
    assert answer.status_code == 400, answer.text
    assert "UTF-8" in answer.text
    assert site.count("submission_versions") == before
    _still_serving(site)
