"""A tablet names its files ``../../x``: nothing it names may step out of an archive's folder.

A record's XML names its files (the answers of its image, audio and file questions), and the
media zip and the CSV zip put each file under ``media/`` with that name. ODK Collect names a
file after the time it was taken, or keeps a chosen file's own name: one plain name, never a
path. So a record naming ``../../x``, ``a/b.jpg``, ``a\\b.jpg``, ``..`` or a name with control
characters is refused whole (400, nothing stored), through Collect's route and the API's; and
whatever the database holds already, every archive entry is built from a name that cannot
leave its folder. A name the XML writes decomposed (NFD, ``e`` + combining accent, as macOS
and some keyboards do) matches the same name in the upload's file part written composed.
"""

from __future__ import annotations

import io
import unicodedata
import uuid
import zipfile

import pytest
import sqlalchemy as sa

from server.db import create_engine
from tests.support.site import FORM_ID, household_record

pytestmark = pytest.mark.slow

JPEG = b"\xff\xd8\xff\xe0" + b"a photo" * 50 + b"\xff\xd9"
HOSTILE_NAMES = [
    "../../x.jpg",
    "../../../../tmp/evil.jpg",
    "a/b.jpg",
    "/etc/passwd",
    "a\\b.jpg",
    "..\\..\\x.jpg",
    "..",
    ".",
    "ph\x7foto.jpg",
    "gpj.\u202eexe.jpg",
]


def says_file_name(text: str) -> bool:
    """Tell whether a refusal names the problem (in French, Collect's default, or English)."""
    return "nom de fichier" in text or "file name" in text


def form_url(site) -> str:
    return f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"


def attachments_of(site, instance_id: str) -> list[dict]:
    """Return the record's file slots but its client audit log (not sent by these tests)."""
    answer = site.api("manager").get(
        f"{form_url(site)}/submissions/{instance_id}/attachments", timeout=30
    )
    assert answer.status_code == 200, answer.text
    return [a for a in answer.json() if a["name"] != "audit.csv"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_record_naming_a_path_is_refused_through_collects_route(site, name):
    before = site.count("submissions")
    xml = household_record(photo=name)
    answer = site.submit(xml, [(name, JPEG, "image/jpeg")])
    assert answer.status_code == 400, answer.text
    assert "<OpenRosaResponse" in answer.text and says_file_name(answer.text)
    assert site.count("submissions") == before


@pytest.mark.parametrize("name", ["../../x.jpg", "a\\b.jpg", ".."])
def test_a_record_naming_a_path_is_refused_through_the_api(site, name):
    before = site.count("submissions")
    answer = site.api("manager").post(
        f"{form_url(site)}/submissions",
        data=household_record(photo=name),
        headers={"Content-Type": "application/xml"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 400.31 and says_file_name(answer.json()["message"])
    assert site.count("submissions") == before


def test_the_api_refuses_a_path_as_the_name_of_an_uploaded_file(site):
    url = f"{form_url(site)}/submissions/{site.instance_id}/attachments/..%2F..%2Fx.jpg"
    answer = site.api("manager").post(
        url, data=JPEG, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 400.31


def test_a_plain_name_is_still_taken_from_a_part_that_names_a_path(site):
    # RFC 7578 §4.2: a part's filename may carry a path, which the receiver drops. The XML
    # names the plain file; the part "dir/1715090512345.jpg" is that file.
    instance_id = f"uuid:{uuid.uuid4()}"
    answer = site.submit(
        household_record(instance_id, photo="1715090599999.jpg"),
        [("sdcard/odk/1715090599999.jpg", JPEG, "image/jpeg")],
    )
    assert answer.status_code == 201, answer.text
    assert attachments_of(site, instance_id) == [{"name": "1715090599999.jpg", "exists": True}]


def _plant_stored_names(site, instance_id: str, names: list[str]) -> None:
    """Give a stored record file slots with hostile names, as records kept from before hold."""
    engine = create_engine(site.database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            slot = connection.execute(
                sa.text(
                    "SELECT a.submission_version_id, a.blob_id, a.content_type "
                    "FROM submission_attachments a "
                    "JOIN submission_versions v ON v.id = a.submission_version_id "
                    "WHERE v.instance_id = :iid AND a.blob_id IS NOT NULL"
                ),
                {"iid": instance_id},
            ).one()
            for name in names:
                connection.execute(
                    sa.text(
                        "INSERT INTO submission_attachments "
                        "(submission_version_id, name, blob_id, content_type, is_client_audit) "
                        "VALUES (:version, :name, :blob, :type, :audit)"
                    ),
                    {
                        "version": slot.submission_version_id,
                        "name": name,
                        "blob": slot.blob_id,
                        "type": slot.content_type,
                        "audit": False,
                    },
                )
    finally:
        engine.dispose()


def _safe_entry(name: str) -> bool:
    parts = name.split("/")
    return (
        not name.startswith("/")
        and "\\" not in name
        and all(part not in ("", ".", "..") for part in parts)
        and not any(unicodedata.category(ch)[0] == "C" for ch in name)
    )


def test_archives_never_hold_an_entry_outside_their_folder(site):
    instance_id = f"uuid:{uuid.uuid4()}"
    photo = "1715090511111.jpg"
    sent = site.submit(household_record(instance_id, photo=photo), [(photo, JPEG, "image/jpeg")])
    assert sent.status_code == 201, sent.text
    stored = ["../../../../x.jpg", "/abs.jpg", "a\\..\\b.jpg", "..", "c\x01d.jpg", "sub/dir.jpg"]
    _plant_stored_names(site, instance_id, stored)
    manager = site.api("manager")
    for fmt, params in (
        ("media.zip", {}),
        ("csv.zip", {"attachments": "true", "pii": "plain"}),
    ):
        answer = manager.get(f"{form_url(site)}/submissions.{fmt}", params=params, timeout=60)
        assert answer.status_code == 200, answer.text
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        names = archive.namelist()
        assert all(_safe_entry(n) for n in names), names
        media = [n for n in names if n.startswith("media/")]
        assert all(n.count("/") == 1 for n in media), media
        # Every planted file is still there, under a name that stays in media/.
        holding = [n for n in media if archive.read(n) == JPEG]
        assert len(holding) >= len(stored) + 1, media


def test_a_name_written_decomposed_in_the_xml_matches_the_composed_part(site):
    composed = unicodedata.normalize("NFC", "été-photo.jpg")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    instance_id = f"uuid:{uuid.uuid4()}"
    answer = site.submit(
        household_record(instance_id, photo=decomposed), [(composed, JPEG, "image/jpeg")]
    )
    assert answer.status_code == 201, answer.text
    # The slot keeps the name as the record writes it (the name its answer shows); the file
    # arrived in it, and either spelling finds it.
    assert attachments_of(site, instance_id) == [{"name": decomposed, "exists": True}]
    for spelling in (composed, decomposed):
        download = site.api("manager").get(
            f"{form_url(site)}/submissions/{instance_id}/attachments/{spelling}", timeout=30
        )
        assert download.status_code == 200 and download.content == JPEG


def test_a_name_written_composed_in_the_xml_matches_the_decomposed_part(site):
    composed = unicodedata.normalize("NFC", "reçu-signé.jpg")
    decomposed = unicodedata.normalize("NFD", composed)
    instance_id = f"uuid:{uuid.uuid4()}"
    answer = site.submit(
        household_record(instance_id, photo=composed), [(decomposed, JPEG, "image/jpeg")]
    )
    assert answer.status_code == 201, answer.text
    assert attachments_of(site, instance_id) == [{"name": composed, "exists": True}]
