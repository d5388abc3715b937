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
    # The bad network and the faults really happened: retries, absorbed duplicates, 503s.
    network = summary["network"]
    assert min(network["drop"], network["stall"], network["lose_response"]) > 0, report
    assert network["duplicate"] > 0 and summary["duplicates_absorbed"] > 0, report
    assert summary["split_sends"] > 0 and summary["status_503"] > 0, report
    assert result.returncode == 0, report
