"""The field simulation, and the bugs it found, each pinned by a test of its own.

``test_the_field_simulation_loses_nothing_across_every_fault`` runs scripts/field_sim.py at CI
scale: about twenty tablets and five hundred records through a proxy that drops, stalls, loses
and duplicates requests, while a gunicorn worker and then the whole server are killed,
PostgreSQL is restarted and crashed, and the object store goes away (once long enough for the
spool to fill). It checks the ledger's verdict, never the timings.

The other tests reproduce, in a few requests, what the simulation found (README, "Field
simulation"); each runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from server.storage.models import Blob
from server.submissions.models import SubmissionAttachment, SubmissionVersion
from tests.support import factories
from tests.support.collect import CollectClient
from tests.support.openrosa import (
    OPENROSA,
    message_of,
    multipart,
    new_instance_id,
    publish_form,
    record,
)
from tests.support.servers import ROOT


@pytest.fixture
def device(db_session):
    """A project with the test form published and one tablet (app user) assigned to it."""
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    return {"base": f"/v1/key/{token}/projects/{project.id}"}


def post(client, device, xml, files, **kwargs):
    return client.post(
        f"{device['base']}/submission?deviceID=collect%3AAbC123dEf456GhIj",
        data=multipart(xml, files, **kwargs),
        headers=OPENROSA,
        content_type="multipart/form-data",
    )


def photo_of(size: int, seed: int = 0) -> bytes:
    """Return ``size`` bytes that start like a JPEG and differ for each seed."""
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (b"\xff\xd8\xff\xe0" + body)[:size]


# ---- finding 1: the advertised split size left no room for multipart framing ------------------


@pytest.mark.parametrize("app_overrides", [{"MAX_UPLOAD_BYTES": 300_000}])
def test_a_post_filled_to_the_advertised_size_as_collect_does_is_accepted(client, device):
    """Collect counts the XML and the files, not the framing, against the advertised size."""
    head = client.head(f"{device['base']}/submission", headers=OPENROSA)
    advertised = int(head.headers["X-OpenRosa-Accept-Content-Length"])
    xml = record(new_instance_id())
    audit = b"event,node,start,end\nform start,,1,\n"
    files = {"1715090512345.jpg": photo_of(advertised - len(xml) - len(audit)), "audit.csv": audit}
    plan = CollectClient("http://unused").plan(xml, files, advertised)
    assert plan == [files]  # exactly at the advertised size: Collect sends one POST
    response = post(client, device, xml, files)
    assert response.status_code == 201, message_of(response)
    assert int(response.request.headers["Content-Length"]) > advertised  # framing came on top


# ---- finding 2: an edit's own file arriving in a later POST lost to the carried-forward one -----


def files_of(db_session, instance_id: str) -> dict[str, str]:
    """Return name -> sha256 of the files one version holds."""
    db_session.expire_all()
    return dict(
        db_session.execute(
            sa.select(SubmissionAttachment.name, Blob.sha256)
            .join(Blob, Blob.id == SubmissionAttachment.blob_id)
            .join(
                SubmissionVersion,
                SubmissionVersion.id == SubmissionAttachment.submission_version_id,
            )
            .where(SubmissionVersion.instance_id == instance_id)
        ).all()
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_edit_split_over_two_posts_keeps_the_audit_log_it_sent(client, device, db_session):
    """The edit's audit.csv (same name, grown) comes in the second POST, after a new photo."""
    first = new_instance_id()
    old_audit = b"event,node,start,end\nform start,,1,\n"
    old_photo = photo_of(5000, 1)
    sent = post(
        client, device, record(first), {"1715090512345.jpg": old_photo, "audit.csv": old_audit}
    )
    assert sent.status_code == 201
    edit = new_instance_id()
    new_audit = old_audit + b"form resume,,2,\nform save,,3,\n"
    new_photo = photo_of(5000, 2)
    xml = record(edit, photo="1715090599999.jpg", deprecated_id=first)
    part_one = post(client, device, xml, {"1715090599999.jpg": new_photo}, incomplete=True)
    part_two = post(client, device, xml, {"audit.csv": new_audit})
    assert part_one.status_code == part_two.status_code == 201
    assert files_of(db_session, edit) == {
        "1715090599999.jpg": sha(new_photo),
        "audit.csv": sha(new_audit),
    }
    assert files_of(db_session, first) == {
        "1715090512345.jpg": sha(old_photo),
        "audit.csv": sha(old_audit),
    }


def test_a_file_resent_with_other_bytes_for_the_same_version_keeps_the_first(
    client, device, db_session
):
    """Outside edits, the first durable copy of a name stays (nothing silently replaced)."""
    iid = new_instance_id()
    xml = record(iid)
    photo = photo_of(5000, 3)
    assert (
        post(client, device, xml, {"1715090512345.jpg": photo}, incomplete=True).status_code == 201
    )
    again = post(client, device, xml, {"1715090512345.jpg": photo_of(5000, 4), "audit.csv": b"e\n"})
    assert again.status_code == 201
    assert files_of(db_session, iid) == {"1715090512345.jpg": sha(photo), "audit.csv": sha(b"e\n")}


# ---- the simulation itself ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_field_simulation_loses_nothing_across_every_fault(tmp_path):
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "field_sim.py"),
            "--tablets",
            "20",
            "--records",
            "500",
            "--workdir",
            str(tmp_path / "run"),
            "--summary-json",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert summary_path.exists(), result.stderr[-4000:]
    summary = json.loads(summary_path.read_text())
    report = result.stdout[-6000:]
    assert summary["faults"] == {
        kind: 1
        for kind in (
            "worker_kill",
            "server_kill",
            "postgres_restart",
            "postgres_kill",
            "s3_outage",
            "spool_full",
        )
    }, report
    assert summary["records_delivered"] == summary["records_filled"] == 500, report
    assert summary["edits_delivered"] == summary["edits_made"] > 0, report
    assert summary["losses"] == 0, report
    assert summary["duplicates_on_server"] == 0, report
    assert summary["mismatches"] == 0, report
    assert summary["unknown_on_server"] == 0, report
    assert summary["versions_undelivered"] == 0, report
    assert summary["final_answer_incomplete"] == 0, report
    assert summary["orphan_blob_rows"] == 0, report
    # The bad network and the faults really happened: retries, absorbed duplicates, 503s.
    network = summary["network"]
    for kind in ("drop", "stall", "lose_response", "duplicate"):
        assert network.get(kind, 0) > 0, report
    assert summary["duplicates_absorbed"] > 0, report
    assert summary["split_sends"] > 0 and summary["status_503"] > 0, report
    assert result.returncode == 0, report


def test_the_simulated_tablets_never_give_two_photos_one_name():
    # As Collect's capture-time names: the ledger of an edit relies on it (a run at 20,000
    # records found two photos of one record sharing a name when the names were random).
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import field_sim
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    names = [field_sim.photo_name() for _ in range(5000)]
    assert len(set(names)) == len(names)
    assert all(name.endswith(".jpg") and name[:-4].isdigit() for name in names)
