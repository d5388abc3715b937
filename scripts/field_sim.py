"""Field simulation: hundreds of tablets on bad networks, faults injected, and a ledger.

    .venv/bin/python scripts/field_sim.py                                  # 20 tablets, 500 records
    .venv/bin/python scripts/field_sim.py --tablets 200 --records 20000   # the survey-round size
    .venv/bin/python scripts/field_sim.py --faults none --drop 0 ...      # a quiet baseline

Everything is real and on this machine: ``merit serve`` (gunicorn, its workers and threads), a
private PostgreSQL cluster made for the run (never the shared one), moto's S3 server behind a
gate that can be closed, and an HTTP proxy that breaks requests (tests/support/network.py).

**Tablets.** Each is an app user created through the API, assigned to the forms, configured
from its ``collect-settings`` server URL, and behaves as ODK Collect does (openrosa.md): it
polls the form list and manifests and downloads what changed (md5 checked), fills records from
the form's primary instance (tests/support/collect.py, imported from here with the repository
root on ``sys.path``), sends HEAD then POSTs split at the advertised size (the server is made
to advertise a small one, so splits happen), and on any failure (timeout, reset, 5xx, 4xx)
waits with back-off (``Retry-After`` on 503) and sends the whole record again, from its first
file. Sometimes it edits a record it delivered: a new instanceID, ``meta/deprecatedID`` naming
the previous one, and only the changed files sent (the server carries the others forward).
Records carry photos (random bytes behind a JPEG header) and a client audit log (audit.csv).

**Faults**, each at least once, at random moments while uploads are in flight: kill -9 of one
gunicorn worker, kill -9 of the whole server and a restart, ``pg_ctl restart -m fast``, kill -9
of the postmaster and crash recovery, the S3 store going away and coming back, and the store
away long enough for the (deliberately small) spool to fill, so that tablets get 503.

**The ledger.** Each tablet notes what it believes it delivered: a record whose last POST got
201 with an answer saying it is complete. At the end (faults off, every tablet's outbox
retried, the spool drained) every delivered version must be on the server exactly once, its
XML byte-identical, its version chain the tablet's, every attachment byte-identical (sha256,
through ``merit storage verify`` and downloads through the API); nothing may be stored that no
tablet sent; the CSV export must hold each record once; and every blob must be referenced and
in the bucket. The summary ends with losses, duplicates and mismatches; the exit code is 1 if
any is not zero.

Time is compressed: Collect's 60 s timeouts and the server's ``Retry-After`` are scaled by
``--time-scale``. The faults are real, not scaled.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from lxml import etree  # noqa: E402

from tests.support.collect import DEFAULT_SPLIT, CollectClient, DownloadFailed  # noqa: E402
from tests.support.network import FaultRates, FaultyProxy, TcpGate  # noqa: E402
from tests.support.postgres import PrivateCluster  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402
from tests.support.servers import ServerProcess, free_port  # noqa: E402

ADMIN = ("sim-admin@example.org", "field simulation password, local only")
PROJECT = 1
BUCKET = "merit-field-sim"
PREFIX = "collect"
FAULT_KINDS = (
    "worker_kill",
    "server_kill",
    "postgres_restart",
    "postgres_kill",
    "s3_outage",
    "spool_full",
)
# The answers' texts (French by default, English if asked), as the enumerator reads them.
PARTIAL = ("Une partie de la fiche", "Part of the record received")
ALREADY = ("avait déjà été reçue", "had already been received")
OPENROSA_NS = "{http://openrosa.org/http/response}"

# A form of the simulation's own, published through the API: four photo questions, so that
# records are split over several POSTs at the advertised size.
FIELD_VISIT = """<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
 xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms"
 xmlns:odk="http://www.opendatakit.org/xforms">
 <h:head>
  <h:title>Visite de terrain (simulation)</h:title>
  <model odk:xforms-version="1.0.0">
   <instance>
    <data id="field_visit" version="{version}">
     <site/><visit_date/><notes/>{extra}
     <photo_1/><photo_2/><photo_3/><photo_4/>
     <meta><audit/><instanceID/><instanceName/></meta>
    </data>
   </instance>
   <bind nodeset="/data/site" type="string"/>
   <bind nodeset="/data/visit_date" type="date"/>
   <bind nodeset="/data/notes" type="string"/>{extra_bind}
   <bind nodeset="/data/photo_1" type="binary"/>
   <bind nodeset="/data/photo_2" type="binary"/>
   <bind nodeset="/data/photo_3" type="binary"/>
   <bind nodeset="/data/photo_4" type="binary"/>
   <bind nodeset="/data/meta/audit" type="binary"/>
   <bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
   <bind nodeset="/data/meta/instanceName" type="string" calculate="/data/site"/>
  </model>
 </h:head>
 <h:body>
  <input ref="/data/site"><label>Site</label></input>
  <input ref="/data/visit_date"><label>Date</label></input>
  <input ref="/data/notes"><label>Notes</label></input>{extra_body}
  <upload ref="/data/photo_1" mediatype="image/*"><label>Photo 1</label></upload>
  <upload ref="/data/photo_2" mediatype="image/*"><label>Photo 2</label></upload>
  <upload ref="/data/photo_3" mediatype="image/*"><label>Photo 3</label></upload>
  <upload ref="/data/photo_4" mediatype="image/*"><label>Photo 4</label></upload>
 </h:body>
</h:html>
"""


def field_visit_xform(version: str, *, with_weather: bool = False) -> bytes:
    """Return the simulation's own form (a second version adds a question)."""
    extra = ("", "", "")
    if with_weather:
        extra = (
            "<weather/>",
            '\n   <bind nodeset="/data/weather" type="string"/>',
            '\n  <input ref="/data/weather"><label>Météo</label></input>',
        )
    return FIELD_VISIT.format(
        version=version, extra=extra[0], extra_bind=extra[1], extra_body=extra[2]
    ).encode("utf-8")


# ---- what the tablets believe ----------------------------------------------------------------


@dataclass
class Version:
    """One version of a record as its tablet holds it (the first, or an edit)."""

    tablet: int
    form_id: str
    instance_id: str
    deprecated_id: str | None
    root_id: str
    xml: bytes
    files: dict[str, bytes]  # what this version sends (bytes dropped once delivered)
    attachments: dict[str, str]  # every file the version names -> sha256 (sent or carried)
    values: dict[str, str]
    xml_sha256: str = ""
    delivered: bool = False
    attempts: int = 0
    failures: int = 0
    next_attempt: float = 0.0
    gave_up: bool = False
    last_error: str = ""

    def __post_init__(self) -> None:
        """Hash the XML once: the ledger compares digests."""
        self.xml_sha256 = hashlib.sha256(self.xml).hexdigest()


class Ledger:
    """Every version every tablet made, and which it believes it delivered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: dict[str, Version] = {}
        self.chains: dict[str, list[str]] = {}  # root instanceID -> instanceIDs, oldest first

    def add(self, version: Version) -> None:
        """Note a new version (a record, or an edit of a delivered one)."""
        with self.lock:
            self.versions[version.instance_id] = version
            self.chains.setdefault(version.root_id, []).append(version.instance_id)

    def delivered(self) -> list[Version]:
        """Return the versions believed delivered."""
        with self.lock:
            return [v for v in self.versions.values() if v.delivered]

    def count(self) -> Counter[str]:
        """Count versions by state."""
        with self.lock:
            found: Counter[str] = Counter()
            for version in self.versions.values():
                found["versions"] += 1
                found["edits" if version.deprecated_id else "records"] += 1
                found["delivered" if version.delivered else "pending"] += 1
            return found


class Stats:
    """Counters shared by every tablet (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.in_flight = 0

    def add(self, key: str, amount: int = 1) -> None:
        """Add to a counter."""
        with self.lock:
            self.counts[key] += amount

    def flight(self, delta: int) -> None:
        """Count requests in flight up or down."""
        with self.lock:
            self.in_flight += delta

    def get(self, key: str) -> int:
        """Read a counter."""
        with self.lock:
            return self.counts[key]


# ---- content of the records --------------------------------------------------------------------


def photo(rng: random.Random, low_kb: int, high_kb: int) -> bytes:
    """Return a photo-sized file: random bytes between a JPEG header and trailer."""
    size = int(rng.uniform(low_kb, high_kb) * 1000)
    header = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return header + rng.randbytes(max(0, size - len(header) - 2)) + b"\xff\xd9"


def audit_log(rng: random.Random, previous: bytes = b"") -> bytes:
    """Return a client audit log as Collect writes it (events appended on each edit)."""
    now = int(time.time() * 1000)
    lines = [] if previous else ["event,node,start,end"]
    lines.append(f"form start,,{now},")
    for index in range(rng.randint(5, 60)):
        start = now + index * rng.randint(500, 9000)
        lines.append(f"question,/data/q{index},{start},{start + rng.randint(400, 20000)}")
    lines.append(f"form save,,{now + 99999},")
    return previous + ("\n".join(lines) + "\n").encode("utf-8")


_last_photo = 0
_photo_lock = threading.Lock()


def photo_name() -> str:
    """Name a photo as Collect does: the capture time, never the same twice on a device.

    Collect's names never repeat (a capture takes longer than a millisecond); the simulation
    fills records faster, so each name is the time in microseconds or one more than the last.
    (Random digits were not enough: at 20,000 records two photos of one record once got the
    same name, and the edit that replaced one of them dropped the other from the ledger.)
    """
    global _last_photo
    with _photo_lock:
        _last_photo = max(int(time.time() * 1_000_000), _last_photo + 1)
        return f"{_last_photo}.jpg"


# ---- a tablet ----------------------------------------------------------------------------------


class Tablet(threading.Thread):
    """One simulated ODK Collect: forms kept up to date, records filled, sent and retried."""

    def __init__(self, index: int, server_url: str, quota: int, sim: Simulation) -> None:
        super().__init__(name=f"tablet-{index}", daemon=True)
        self.index = index
        self.sim = sim
        self.opts = sim.opts
        self.rng = random.Random(sim.opts.seed * 1000 + index)
        self.client = CollectClient(
            server_url,
            device_id=f"collect:sim{index:04d}{uuid.uuid4().hex[:9]}",
            session=requests.Session(),
            timeout=sim.opts.timeout,
        )
        self.quota = quota
        self.outbox: list[Version] = []
        self.sent: list[Version] = []  # delivered current versions this tablet may edit
        self.forms_checked = 0.0
        self.audits: dict[str, bytes] = {}  # instanceID -> its audit log, grown by edits
        self.finished = False

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Poll forms, fill records and send them until the quota is done."""
        try:
            while not self.sim.stop_event.is_set():
                if time.monotonic() - self.forms_checked > self.opts.form_poll_seconds:
                    self.update_forms()
                if self.client.forms and self.quota > 0 and self.sim.may_create():
                    self.fill()
                self.send_outbox()
                if self.quota == 0 and all(v.gave_up for v in self.outbox):
                    break  # nothing more to fill; what is left waits for the final sweep
                time.sleep(self.rng.uniform(0.0, self.opts.think_seconds))
        except Exception as exc:  # a bug of the simulator must not pass for a quiet tablet
            self.sim.stats.add("tablet_crashes")
            self.sim.log(f"tablet {self.index} crashed: {exc!r}")
            raise
        finally:
            self.finished = True

    def finish(self, deadline: float) -> None:
        """Send what is left (faults are off): the final sweep, until ``deadline``."""
        for version in self.outbox:
            version.next_attempt = 0.0
            version.gave_up = False
        while self.outbox and time.monotonic() < deadline:
            self.send_outbox(max_attempts=None)
            time.sleep(0.2)

    # ---- forms ---------------------------------------------------------------------------

    def update_forms(self) -> None:
        """Poll the form list, download changed forms and media (md5 checked), as Collect."""
        self.sim.stats.add("form_polls")
        try:
            changed = self.client.update_forms()
        except AssertionError as exc:
            # A 200 whose bytes do not hash to what the list or manifest said.
            self.sim.stats.add("form_hash_mismatches")
            self.sim.log(f"tablet {self.index}: {exc}")
            return
        except (requests.RequestException, DownloadFailed, etree.XMLSyntaxError, KeyError):
            self.sim.stats.add("form_poll_failures")
            return
        self.forms_checked = time.monotonic()
        if changed:
            self.sim.stats.add("form_downloads", len(changed))

    # ---- records -------------------------------------------------------------------------

    def fill(self) -> None:
        """Fill a new record, or sometimes edit one already delivered."""
        editable = [v for v in self.sent if v.form_id in self.client.forms]
        if editable and self.rng.random() < self.opts.edit_rate:
            self.edit(self.rng.choice(editable))
            return
        if not self.sim.take_record():
            self.quota = 0
            return
        self.quota -= 1
        form_id = self.rng.choice(sorted(self.client.forms))
        values, files = self.answers(form_id)
        instance_id = f"uuid:{uuid.uuid4()}"
        self.audits[instance_id] = files["audit.csv"]
        xml = self.client.new_record(form_id, values, instance_id=instance_id)
        version = Version(
            tablet=self.index,
            form_id=form_id,
            instance_id=instance_id,
            deprecated_id=None,
            root_id=instance_id,
            xml=xml,
            files=files,
            attachments={n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
            values=values,
        )
        self.sim.ledger.add(version)
        self.outbox.append(version)

    def answers(self, form_id: str) -> tuple[dict[str, str], dict[str, bytes]]:
        """Return the values and files of a new record of ``form_id``."""
        rng, opts = self.rng, self.opts
        code = f"E{self.index:03d}"
        files: dict[str, bytes] = {}
        if form_id == "needs_assessment":
            values = {
                "consent_section/enumerator_code": code,
                "consent_section/consent": "yes",
                "site/site_type": rng.choice(["prison", "community"]),
                "site/region": "ML04",
                "site/cercle": "ML0405",
                "site/site_name": f"Site {rng.randint(1, 500)}",
                "closing/enumerator_observations": f"observation {uuid.uuid4().hex[:8]}",
            }
            if rng.random() < 0.8:
                name = photo_name()
                values["site/site_photo"] = name
                files[name] = photo(rng, opts.photo_min_kb, opts.photo_max_kb)
        elif form_id == "youth_survey":
            values = {
                "interview/enumerator_code": code,
                "interview/region": "ML04",
                "interview/cercle": "ML0405",
                "eligibility_consent/age_years": str(rng.randint(15, 35)),
                "eligibility_consent/consent": "yes",
                "closing/respondent_comments": f"commentaire {uuid.uuid4().hex[:8]}",
            }
        else:
            values = {
                "site": f"Site {rng.randint(1, 500)}",
                "visit_date": time.strftime("%Y-%m-%d"),
                "notes": f"visite {uuid.uuid4().hex[:8]}",
            }
            for number in range(1, 5):
                if rng.random() < 0.6:
                    name = photo_name()
                    values[f"photo_{number}"] = name
                    files[name] = photo(rng, opts.photo_min_kb, opts.photo_max_kb)
        values["meta/audit"] = "audit.csv"
        files["audit.csv"] = audit_log(rng)
        return values, files

    def edit(self, previous: Version) -> None:
        """Edit a delivered record: new instanceID, deprecatedID, only changed files sent."""
        rng, opts = self.rng, self.opts
        self.sent.remove(previous)
        values = dict(previous.values)
        attachments = dict(previous.attachments)
        files: dict[str, bytes] = {}
        for key, name in list(values.items()):
            if name.endswith(".jpg") and rng.random() < 0.5:
                # A photo taken again: a new file under a new name replaces it.
                new_name = photo_name()
                values[key] = new_name
                if name not in values.values():  # another question may still hold it
                    attachments.pop(name, None)
                files[new_name] = photo(rng, opts.photo_min_kb, opts.photo_max_kb)
        note_key = {
            "needs_assessment": "closing/enumerator_observations",
            "youth_survey": "closing/respondent_comments",
        }.get(previous.form_id, "notes")
        values[note_key] = f"{values.get(note_key, '')} (modifié {uuid.uuid4().hex[:6]})"
        # The audit log keeps its name and grows: the edit sends it again.
        files["audit.csv"] = audit_log(rng, previous=self.audits.pop(previous.instance_id, b""))
        attachments.update({n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
        instance_id = f"uuid:{uuid.uuid4()}"
        xml = self.client.new_record(
            previous.form_id, values, instance_id=instance_id, deprecated_id=previous.instance_id
        )
        version = Version(
            tablet=self.index,
            form_id=previous.form_id,
            instance_id=instance_id,
            deprecated_id=previous.instance_id,
            root_id=previous.root_id,
            xml=xml,
            files=files,
            attachments=attachments,
            values=values,
        )
        self.audits[instance_id] = files["audit.csv"]
        self.sim.ledger.add(version)
        self.sim.stats.add("edits_made")
        self.outbox.append(version)

    # ---- sending -------------------------------------------------------------------------

    def send_outbox(self, max_attempts: int | None = -1) -> None:
        """Try every record whose back-off has passed, in the order they were finalised."""
        limit = self.opts.max_attempts if max_attempts == -1 else max_attempts
        now = time.monotonic()
        for version in list(self.outbox):
            if self.sim.stop_event.is_set():
                return
            if version.gave_up or version.next_attempt > now:
                continue
            if self.send(version):
                self.outbox.remove(version)
                continue
            if limit is not None and version.attempts >= limit:
                version.gave_up = True  # auto-send stops; the final sweep tries again

    def send(self, version: Version) -> bool:
        """Send one record as Collect does: HEAD, then the planned POSTs; True if delivered."""
        stats = self.sim.stats
        version.attempts += 1
        stats.add("send_attempts")
        if version.attempts > 1:
            stats.add("retries")
        try:
            stats.add("heads")
            status, split = self.client.preflight()
        except requests.RequestException as exc:
            return self.failed(version, f"HEAD {type(exc).__name__}")
        if status == 401:
            return self.failed(version, "HEAD 401")
        if status != 204:
            stats.add(f"head_status_{status}")
            split = DEFAULT_SPLIT  # Collect's default when the preflight says nothing usable
        parts = self.client.plan(version.xml, version.files, split)
        if len(parts) > 1:
            stats.add("split_sends")
        text = ""
        for number, part in enumerate(parts):
            stats.add("posts")
            stats.flight(1)
            try:
                response = self.client.post(version.xml, part, incomplete=number < len(parts) - 1)
            except requests.RequestException as exc:
                return self.failed(version, f"POST {type(exc).__name__}")
            finally:
                stats.flight(-1)
            stats.add(f"status_{response.status_code}")
            if response.status_code not in (201, 202):
                retry_after = response.headers.get("Retry-After")
                return self.failed(version, f"POST {response.status_code}", retry_after)
            text = answer_text(response.content)
            if any(marker in text for marker in ALREADY):
                stats.add("duplicates_absorbed")
        if any(marker in text for marker in PARTIAL):
            # Collect would now mark the record sent: the server says files are missing.
            stats.add("final_answer_incomplete")
            self.sim.log(f"tablet {self.index} {version.instance_id}: last answer: {text}")
            return self.failed(version, "final answer incomplete")
        self.delivered(version)
        return True

    def delivered(self, version: Version) -> None:
        """Note a version delivered; keep its hashes, drop its bytes."""
        with self.sim.ledger.lock:
            version.delivered = True
        version.files = {}  # the bytes are no longer needed: their sha256 stays
        self.sim.stats.add("edits_delivered" if version.deprecated_id else "records_delivered")
        self.sent.append(version)

    def failed(self, version: Version, reason: str, retry_after: str | None = None) -> bool:
        """Note a failure and when to try again (exponential back-off, or Retry-After)."""
        version.failures += 1
        version.last_error = reason
        self.sim.stats.add("failed_attempts")
        self.sim.stats.add(f"failure:{reason}")
        scale = self.opts.time_scale
        if retry_after and retry_after.isdigit():
            wait = int(retry_after) * scale
            self.sim.stats.add("retry_after_honoured")
        else:
            wait = min(
                self.opts.backoff_cap, self.opts.backoff_base * 2 ** min(version.failures, 8)
            )
            wait *= self.rng.uniform(0.5, 1.5)
        version.next_attempt = time.monotonic() + wait
        return False


def answer_text(body: bytes) -> str:
    """Return the first ``<message>`` of an OpenRosaResponse, as Collect shows it."""
    try:
        root = etree.fromstring(body)
    except etree.XMLSyntaxError:
        return ""
    message = root.find(f"{OPENROSA_NS}message")
    return message.text or "" if message is not None else ""


# ---- the simulation ----------------------------------------------------------------------------


class SimServer(ServerProcess):
    """``merit serve`` as the tests run it, but patient when it restarts under load."""

    def _wait_until_healthy(self, timeout: float) -> None:
        # Restarted while two hundred tablets keep sending, the server's listen queue is full
        # of their requests: /healthz waits its turn, longer than the tests' one second.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=15).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer within {timeout}s: {self.log()}")


class Simulation:
    """The server and what surrounds it, the tablets, the faults, and the final accounting."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.ledger = Ledger()
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.faults_done = threading.Event()
        self.fault_counts: Counter[str] = Counter()
        self.fault_log: list[str] = []
        self.lock = threading.Lock()
        self.records_taken = 0
        self.hold_at = int(opts.records * opts.hold_fraction)
        self.started = time.monotonic()
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="merit-field-sim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file = (self.workdir / "sim.log").open("a", encoding="utf-8")
        self.tablets: list[Tablet] = []
        self.token = ""
        self.pg: PrivateCluster | None = None
        self.s3: S3Server | None = None
        self.gate: TcpGate | None = None
        self.proxy: FaultyProxy | None = None
        self.server: SimServer | None = None
        self.env: dict[str, str] = {}

    def log(self, message: str) -> None:
        """Write a progress line to stderr and the run's log."""
        line = f"[{time.monotonic() - self.started:7.1f}s] {message}"
        with self.lock:
            print(line, file=sys.stderr, flush=True)
            self.log_file.write(line + "\n")
            self.log_file.flush()

    # ---- records handed out ----------------------------------------------------------------

    def may_create(self) -> bool:
        """Tell whether a tablet may fill a record now.

        The last records wait until every fault has happened, so that each fault finds
        uploads in flight, however fast or slow the run is.
        """
        with self.lock:
            return self.records_taken < self.hold_at or self.faults_done.is_set()

    def take_record(self) -> bool:
        """Count one more record filled; False when the run has all its records."""
        with self.lock:
            if self.records_taken >= self.opts.records:
                return False
            self.records_taken += 1
            return True

    # ---- setting up ------------------------------------------------------------------------

    def start_infrastructure(self) -> None:
        """Start PostgreSQL, S3 behind its gate, the proxy, and the server."""
        opts = self.opts
        self.pg = PrivateCluster(self.workdir / "pg").start()
        database_url = self.pg.create_database("merit")
        self.log(f"PostgreSQL (private cluster) on port {self.pg.port}")
        s3_port = free_port()
        self.s3 = S3Server(self.workdir / "s3", persist=True).start()
        self.s3.create_bucket(BUCKET)
        # moto replays its recording when it starts again, and records nothing meanwhile: the
        # server must not reach it before the replay ends, or what it writes then is lost at
        # the next restart. The gate opens only once moto is whole.
        self.gate = TcpGate(s3_port, self.s3.port).open()
        self.log(f"S3 (moto) on port {self.s3.port}, gate on {s3_port}")
        server_port = free_port()
        self.proxy = FaultyProxy(
            server_port,
            FaultRates(
                drop=opts.drop,
                stall=opts.stall,
                lose_response=opts.lose_response,
                duplicate=opts.duplicate,
                stall_seconds=(opts.stall_min, opts.stall_max),
            ),
            seed=opts.seed,
        ).start()
        data_dir = self.workdir / "var"
        self.env = {
            **self.s3.env,
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
            "MERIT_DATA_DIR": str(data_dir),
            "MERIT_DATABASE_URL": database_url,
            "MERIT_STORAGE_URL": f"s3://{BUCKET}/{PREFIX}",
            "MERIT_SPOOL_MAX_BYTES": str(opts.spool_max_bytes),
            "MERIT_MAX_UPLOAD_BYTES": str(opts.max_upload_bytes),
            "MERIT_UPLOAD_STALL_SECONDS": str(opts.upload_stall_seconds),
            "MERIT_ADMIN_EMAIL": ADMIN[0],
            "MERIT_ADMIN_PASSWORD": ADMIN[1],
            "MERIT_SECRET_KEY": "field-simulation-secret-key-local-only",
            "MERIT_FORMS_DIR": str(ROOT / "forms"),
            "MERIT_ODK_VALIDATE": "false",
            # Tablets are told to use the proxy's address, as they would a public URL.
            "MERIT_PUBLIC_URL": self.proxy.url,
            "MERIT_PORT": str(server_port),
            "MERIT_WORKERS": str(opts.workers),
            "MERIT_THREADS": str(opts.threads),
            "MERIT_LOG_LEVEL": opts.server_log_level,
        }
        self.server = SimServer(self.env, log_path=self.workdir / "server.log")
        self.server.start(timeout=120)
        self.log(
            f"server on port {server_port} (pid {self.server.process.pid}), proxy on "
            f"{self.proxy.port}"
        )

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the server's API directly (not through the bad network) as the administrator."""
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(30):
            try:
                return requests.request(
                    method, self.server.url + path, headers=headers, timeout=120, **kwargs
                )
            except requests.ConnectionError:
                if attempt == 29:
                    raise
                time.sleep(1)  # the server is being restarted by a fault
        raise AssertionError("unreachable")

    def set_up_project(self) -> list[str]:
        """Sign in, publish the simulation's form, create one app user per tablet."""
        answer = self.api("POST", "/v1/sessions", json={"email": ADMIN[0], "password": ADMIN[1]})
        answer.raise_for_status()
        self.token = answer.json()["token"]
        published = self.api(
            "POST",
            f"/v1/projects/{PROJECT}/forms?publish=true",
            data=field_visit_xform("2024060101"),
            headers={"Content-Type": "application/xml"},
        )
        if published.status_code != 200:
            raise RuntimeError(f"publishing field_visit: {published.status_code} {published.text}")
        forms = ["field_visit", "needs_assessment", "youth_survey"]

        def make(index: int) -> str:
            """Create one app user, assign it, return its server URL."""
            created = self.api(
                "POST",
                f"/v1/projects/{PROJECT}/app-users",
                json={"displayName": f"Tablette simulée {index}"},
            )
            created.raise_for_status()
            actor_id = created.json()["id"]
            for form_id in forms:
                assigned = self.api(
                    "POST",
                    f"/v1/projects/{PROJECT}/forms/{form_id}/assignments/app-user/{actor_id}",
                )
                assigned.raise_for_status()
            settings = self.api(
                "GET", f"/v1/projects/{PROJECT}/app-users/{actor_id}/collect-settings"
            )
            settings.raise_for_status()
            return settings.json()["settings"]["general"]["server_url"]

        with ThreadPoolExecutor(8) as pool:
            urls = list(pool.map(make, range(self.opts.tablets)))
        self.log(f"{len(urls)} app users created and assigned to {', '.join(forms)}")
        return urls

    def publish_second_version(self) -> None:
        """Publish a new version of the simulation's form mid-run: tablets must update."""
        draft = self.api(
            "POST",
            f"/v1/projects/{PROJECT}/forms/field_visit/draft",
            data=field_visit_xform("2024060102", with_weather=True),
            headers={"Content-Type": "application/xml"},
        )
        publish = self.api("POST", f"/v1/projects/{PROJECT}/forms/field_visit/draft/publish")
        ok = draft.status_code == 200 and publish.status_code == 200
        self.stats.add("form_versions_published" if ok else "form_publish_failures")
        self.log(
            f"field_visit version 2024060102 published: {draft.status_code}, {publish.status_code}"
        )

    # ---- faults ----------------------------------------------------------------------------

    def run_faults(self) -> None:
        """Inject each fault kind once, at random points of the run, while uploads are in flight."""
        opts = self.opts
        plan = sorted(
            (self.rng.uniform(opts.fault_from, opts.fault_to) * opts.records, kind)
            for kind in opts.faults
        )
        try:
            for threshold, kind in plan:
                while self.records_taken < threshold and not self.stop_event.is_set():
                    time.sleep(0.1)
                waited = time.monotonic() + 10
                while self.stats.in_flight == 0 and time.monotonic() < waited:
                    time.sleep(0.02)
                if self.stop_event.is_set():
                    return
                in_flight = self.stats.in_flight
                started = time.monotonic()
                getattr(self, f"fault_{kind}")()
                self.fault_counts[kind] += 1
                note = (
                    f"fault {kind} at record {self.records_taken} with {in_flight} POSTs in "
                    f"flight, {time.monotonic() - started:.1f}s"
                )
                self.fault_log.append(note)
                self.log(note)
                # Let the server recover and uploads resume before the next fault.
                time.sleep(self.opts.fault_gap)
        except Exception as exc:
            self.stats.add("fault_errors")
            self.log(f"fault injection failed: {exc!r}"[:2000])
            self.recover()
        finally:
            self.faults_done.set()

    def recover(self) -> None:
        """Bring back whatever a failed fault left down, so the run can still be judged."""
        with contextlib.suppress(Exception):
            if not self.s3.running:
                self.s3.start(timeout=60, replay_timeout=3600)
            self.gate.open()
        with contextlib.suppress(Exception):
            if self.pg.postmaster_pid() is None:
                self.pg.crash_and_start()
        with contextlib.suppress(Exception):
            if self.server.process is None or self.server.process.poll() is not None:
                self.server.start(timeout=300)

    def workers(self) -> list[int]:
        """Return the pids of gunicorn's workers (the master's children)."""
        master = self.server.process.pid
        try:
            text = Path(f"/proc/{master}/task/{master}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in text.split()]

    def fault_worker_kill(self) -> None:
        """kill -9 one gunicorn worker; the master starts another."""
        before = self.workers()
        victim = self.rng.choice(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.workers()
            if victim not in now and len(now) >= self.opts.workers:
                return
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not replace the killed worker")

    def fault_server_kill(self) -> None:
        """kill -9 the whole server (master and workers), then start it again."""
        self.server.stop(signal.SIGKILL, timeout=10)
        time.sleep(self.rng.uniform(0.5, 3.0))
        self.server.start(timeout=300)

    def fault_postgres_restart(self) -> None:
        """Restart PostgreSQL as an operator would (sessions cut)."""
        self.pg.restart_fast()

    def fault_postgres_kill(self) -> None:
        """kill -9 the postmaster; start it again (crash recovery)."""
        self.pg.crash_and_start()

    def _s3_down(self) -> None:
        """Close the gate and stop moto: the store is unreachable."""
        self.gate.close()
        self.s3.stop()

    def _s3_up(self) -> None:
        """Start moto (replaying its objects), then open the gate."""
        self.s3.start(timeout=60, replay_timeout=3600)
        self.gate.open()

    def fault_s3_outage(self) -> None:
        """The object store goes away for a few seconds (the spool takes the files)."""
        self._s3_down()
        time.sleep(self.rng.uniform(self.opts.s3_outage_min, self.opts.s3_outage_max))
        self._s3_up()

    def fault_spool_full(self) -> None:
        """The store stays away until the small spool is full and tablets get 503."""
        before = self.stats.get("status_503")
        self._s3_down()
        deadline = time.monotonic() + self.opts.spool_full_max_seconds
        while self.stats.get("status_503") < before + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.stats.add("spool_full_503s_during_fault", self.stats.get("status_503") - before)
        time.sleep(1)
        self._s3_up()

    # ---- running ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the whole simulation; return the summary."""
        opts = self.opts
        self.start_infrastructure()
        urls = self.set_up_project()
        per_tablet, extra = divmod(opts.records, opts.tablets)
        self.tablets = [
            Tablet(i, url, per_tablet + (1 if i < extra else 0), self) for i, url in enumerate(urls)
        ]
        if not opts.faults:
            self.faults_done.set()
        load_started = time.monotonic()
        for tablet in self.tablets:
            tablet.start()
        faults = threading.Thread(target=self.run_faults, name="faults", daemon=True)
        faults.start()
        deadline = load_started + opts.max_minutes * 60
        published = False
        last_report = 0.0
        while any(t.is_alive() for t in self.tablets):
            if time.monotonic() > deadline:
                self.log("time limit reached: stopping the tablets")
                self.stop_event.set()
                break
            if not published and self.records_taken >= opts.records // 2:
                self.publish_second_version()
                published = True
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                self.progress()
            time.sleep(0.5)
        for tablet in self.tablets:
            tablet.join(30)
        faults.join(max(1.0, deadline - time.monotonic()))
        self.log("every tablet has filled its records; faults off, final sweep")
        self.proxy.enabled = False
        self.stop_event.clear()
        sweep_deadline = time.monotonic() + opts.sweep_seconds
        with ThreadPoolExecutor(max(1, len(self.tablets))) as pool:
            list(pool.map(lambda t: t.finish(sweep_deadline), self.tablets))
        load_seconds = time.monotonic() - load_started
        self.progress()
        drained, spool_left = self.wait_for_spool()
        self.log(f"spool drained: {drained} ({spool_left} files left)")
        findings = Checker(self).check()
        findings["spooled_never_drained"] = spool_left
        return self.summary(findings, load_seconds)

    def progress(self) -> None:
        """Log where the run is."""
        counts = self.ledger.count()
        s = self.stats.counts
        self.log(
            f"records filled {self.records_taken}/{self.opts.records}, delivered "
            f"{counts['delivered']}/{counts['versions']} versions, POSTs {s['posts']}, "
            f"failed attempts {s['failed_attempts']}, 503s {s['status_503']}, faults "
            f"{sum(self.fault_counts.values())}/{len(self.opts.faults)}, in flight "
            f"{self.stats.in_flight}"
        )

    def spool_files(self) -> list[str]:
        """List what waits in the server's spool."""
        folder = self.workdir / "var" / "spool" / "blobs"
        if not folder.is_dir():
            return []
        return [p.name for p in folder.iterdir() if len(p.name) == 64]

    def wait_for_spool(self) -> tuple[bool, int]:
        """Wait until the spool is empty (requests wake the workers' drainers)."""
        deadline = time.monotonic() + self.opts.drain_seconds
        while True:
            left = self.spool_files()
            if not left:
                return True, 0
            if time.monotonic() > deadline:
                return False, len(left)
            with contextlib.suppress(requests.RequestException):
                requests.get(self.server.url + "/readyz", timeout=30)
            time.sleep(2)

    def merit(self, *args: str) -> subprocess.CompletedProcess:
        """Run a ``merit`` command with the server's configuration."""
        command = [str(Path(sys.executable).with_name("merit")), *args]
        return subprocess.run(
            command,
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
        )

    def stop(self) -> None:
        """Stop everything the run started."""
        self.stop_event.set()
        if self.proxy:
            self.proxy.stop()
        if self.server:
            self.server.stop()
        if self.gate:
            self.gate.close()
        if self.s3:
            self.s3.stop()
        if self.pg:
            self.pg.stop()

    # ---- the summary -----------------------------------------------------------------------

    def summary(self, findings: dict[str, Any], load_seconds: float) -> dict[str, Any]:
        """Gather every figure of the run."""
        s = self.stats.counts
        counts = self.ledger.count()
        proxy = self.proxy.counts
        return {
            "tablets": self.opts.tablets,
            "records_filled": counts["records"],
            "records_delivered": s["records_delivered"],
            "edits_made": counts["edits"],
            "edits_delivered": s["edits_delivered"],
            "versions_undelivered": counts["pending"],
            "posts": s["posts"],
            "heads": s["heads"],
            "split_sends": s["split_sends"],
            "send_attempts": s["send_attempts"],
            "retries": s["retries"],
            "failed_attempts": s["failed_attempts"],
            "duplicates_absorbed": s["duplicates_absorbed"],
            "status_503": s["status_503"],
            "retry_after_honoured": s["retry_after_honoured"],
            "statuses": {k[7:]: v for k, v in sorted(s.items()) if k.startswith("status_")},
            "head_statuses": {
                k[12:]: v for k, v in sorted(s.items()) if k.startswith("head_status")
            },
            "final_answer_incomplete": s["final_answer_incomplete"],
            "failures_by_reason": {
                k[8:]: v
                for k, v in sorted(s.items(), key=lambda i: -i[1])
                if k.startswith("failure:")
            },
            "form_polls": s["form_polls"],
            "form_downloads": s["form_downloads"],
            "form_hash_mismatches": s["form_hash_mismatches"],
            "form_versions_published": s["form_versions_published"],
            "network": {k: proxy[k] for k in sorted(proxy)},
            "faults": dict(self.fault_counts),
            "fault_log": self.fault_log,
            "fault_errors": s["fault_errors"],
            "tablet_crashes": s["tablet_crashes"],
            "load_seconds": round(load_seconds, 1),
            "elapsed_seconds": round(time.monotonic() - self.started, 1),
            **findings,
        }


# ---- the ledger's checks -----------------------------------------------------------------------


class Checker:
    """Compare what the tablets believe they delivered with what the server holds."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.problems: list[str] = []
        self.kinds: Counter[str] = Counter()

    def problem(self, kind: str, text: str) -> None:
        """Note one finding (the first few of each kind are kept in full)."""
        self.kinds[kind] += 1
        if self.kinds[kind] <= 20:
            self.problems.append(f"{kind}: {text}")

    def check(self) -> dict[str, Any]:
        """Run every check; return the findings."""
        sim = self.sim
        sim.log("checking the ledger against the database")
        engine = sa.create_engine(
            sim.env["MERIT_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"),
            poolclass=sa.pool.NullPool,
        )
        try:
            with engine.connect() as connection:
                server = self.read_server(connection)
                blob_facts = self.read_blobs(connection)
        finally:
            engine.dispose()
        self.compare(server)
        sim.log("checking every attachment and XML through the API")
        api_route = self.check_api()
        sim.log("merit storage verify")
        verify = self.storage_verify()
        sim.log("checking the CSV exports")
        exports = self.check_exports()
        sim.log("checking blobs and the bucket")
        orphans = self.check_blobs(blob_facts)
        k = self.kinds
        losses = k["lost"] + k["attachment_missing"] + k["blob_missing"]
        duplicates = k["duplicate_version"] + k["duplicate_record"] + k["export_duplicate"]
        mismatches = (
            k["xml_differs"]
            + k["attachment_differs"]
            + k["chain_differs"]
            + k["current_differs"]
            + k["form_differs"]
            + k["api_differs"]
            + k["export_missing"]
            + k["export_unknown"]
            + k["verify_problem"]
        )
        return {
            "losses": losses,
            "duplicates_on_server": duplicates,
            "mismatches": mismatches,
            "unknown_on_server": k["unknown_version"],
            "conflicts_kept": server["conflicts"],
            "stored_but_believed_undelivered": k["stored_undelivered"],
            "findings_by_kind": dict(sorted(k.items())),
            "problems": self.problems,
            "versions_on_server": len(server["versions"]),
            "api_check": api_route,
            "storage_verify": verify,
            "exports": exports,
            **orphans,
        }

    def read_server(self, connection: sa.Connection) -> dict[str, Any]:
        """Read every version, its attachments and the kept conflicts, for project 1's forms."""
        versions = {}
        for row in connection.execute(
            sa.text(
                "SELECT v.id, v.instance_id, v.deprecated_id, v.current, v.xml, "
                "v.attachments_expected, v.attachments_present, s.instance_id AS root, "
                "s.id AS submission_id, s.deleted_at, f.xml_form_id, v.draft "
                "FROM submission_versions v JOIN submissions s ON s.id = v.submission_id "
                "JOIN forms f ON f.id = v.form_id ORDER BY v.id"
            )
        ).mappings():
            if row["instance_id"] in versions:
                self.problem("duplicate_version", row["instance_id"])
            versions[row["instance_id"]] = dict(row)
        by_version: dict[int, dict[str, str | None]] = defaultdict(dict)
        for version_id, name, sha256 in connection.execute(
            sa.text(
                "SELECT a.submission_version_id, a.name, b.sha256 FROM submission_attachments a "
                "LEFT JOIN blobs b ON b.id = a.blob_id"
            )
        ):
            by_version[version_id][name] = sha256
        for version in versions.values():
            version["files"] = by_version.get(version["id"], {})
        conflicts = connection.execute(
            sa.text("SELECT count(*) FROM submission_conflicts")
        ).scalar()
        return {"versions": versions, "conflicts": conflicts}

    def compare(self, server: dict[str, Any]) -> None:
        """Every delivered version once, identical; nothing unknown; chains and current right."""
        ledger = self.sim.ledger
        stored = server["versions"]
        for instance_id, row in stored.items():
            mine = ledger.versions.get(instance_id)
            if mine is None:
                self.problem("unknown_version", f"{instance_id} (form {row['xml_form_id']})")
            elif not mine.delivered:
                self.kinds["stored_undelivered"] += 1
        roots_seen: dict[str, set[int]] = defaultdict(set)
        for version in ledger.versions.values():
            row = stored.get(version.instance_id)
            if row is None:
                if version.delivered:
                    self.problem("lost", f"{version.instance_id} of tablet {version.tablet}")
                continue
            roots_seen[version.root_id].add(row["submission_id"])
            if row["xml_form_id"] != version.form_id:
                self.problem("form_differs", f"{version.instance_id}: {row['xml_form_id']}")
            if hashlib.sha256(row["xml"].encode("utf-8")).hexdigest() != version.xml_sha256:
                self.problem("xml_differs", version.instance_id)
            if row["deprecated_id"] != version.deprecated_id or row["root"] != version.root_id:
                self.problem(
                    "chain_differs",
                    f"{version.instance_id}: deprecatedID {row['deprecated_id']} (tablet "
                    f"{version.deprecated_id}), record {row['root']} (tablet {version.root_id})",
                )
            if row["deleted_at"] is not None or row["draft"]:
                self.problem("lost", f"{version.instance_id} deleted or draft on the server")
            if not version.delivered:
                continue
            files = row["files"]
            for name, sha256 in version.attachments.items():
                if files.get(name) is None:
                    self.problem("attachment_missing", f"{version.instance_id}/{name}")
                elif files[name] != sha256:
                    self.problem("attachment_differs", f"{version.instance_id}/{name}")
            for name in set(files) - set(version.attachments):
                self.problem("attachment_differs", f"{version.instance_id}: extra slot {name}")
            if row["attachments_present"] != row["attachments_expected"]:
                self.problem(
                    "attachment_missing",
                    f"{version.instance_id}: {row['attachments_present']} of "
                    f"{row['attachments_expected']} present",
                )
        for version in ledger.versions.values():
            if not version.delivered:
                self.problem(
                    "undelivered",
                    f"{version.instance_id} of tablet {version.tablet} after {version.attempts} "
                    f"attempts, last: {version.last_error}",
                )
        for root, submissions in roots_seen.items():
            if len(submissions) > 1:
                self.problem("duplicate_record", f"{root} stored as {len(submissions)} records")
        # The current version of each record is the newest one its tablet delivered (or sent).
        for root, chain in ledger.chains.items():
            stored_chain = [i for i in chain if i in stored]
            if not stored_chain:
                continue
            current = [i for i in stored_chain if stored[i]["current"]]
            if current != stored_chain[-1:]:
                self.problem("current_differs", f"{root}: current {current}, tablet {chain}")

    def check_api(self) -> str:
        """Download every delivered version's XML and attachments through the API; compare."""
        sim = self.sim
        delivered = sim.ledger.delivered()
        sample = sim.opts.api_sample
        if sample and len(delivered) > sample:
            delivered = random.Random(sim.opts.seed).sample(delivered, sample)
        probe = delivered[0] if delivered else None
        if probe is not None:
            answer = sim.api("GET", self.version_path(probe) + ".xml")
            if answer.status_code == 404:
                self.problem(
                    "api_unavailable", "the versions API answered 404: checked in the store"
                )
                return self.check_store_directly(delivered)

        session = threading.local()

        def one(version: Version) -> None:
            """Compare one version's XML and files downloaded through the API."""
            http = getattr(session, "http", None)
            if http is None:
                http = session.http = requests.Session()
                http.headers["Authorization"] = f"Bearer {sim.token}"
            base = sim.server.url + self.version_path(version)
            answer = http.get(base + ".xml", timeout=120)
            if answer.status_code != 200 or hashlib.sha256(answer.content).hexdigest() != (
                version.xml_sha256
            ):
                self.problem("api_differs", f"{version.instance_id}.xml: {answer.status_code}")
            for name, sha256 in version.attachments.items():
                answer = http.get(f"{base}/attachments/{name}", timeout=120)
                if answer.status_code != 200:
                    self.problem(
                        "api_differs", f"{version.instance_id}/{name}: {answer.status_code}"
                    )
                elif hashlib.sha256(answer.content).hexdigest() != sha256:
                    self.problem("api_differs", f"{version.instance_id}/{name}: other bytes")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, delivered))
        return f"versions API ({len(delivered)} versions)"

    @staticmethod
    def version_path(version: Version) -> str:
        """Return the API path of one version of a record."""
        return (
            f"/v1/projects/{PROJECT}/forms/{version.form_id}/submissions/{version.root_id}"
            f"/versions/{version.instance_id}"
        )

    def check_store_directly(self, delivered: list[Version]) -> str:
        """Without the API: read each blob from the spool or the bucket, and hash it."""
        sim = self.sim
        client = sim.s3.client()
        spool = sim.workdir / "var" / "spool" / "blobs"
        for version in delivered:
            for name, sha256 in version.attachments.items():
                path = spool / sha256
                if path.exists():
                    data = path.read_bytes()
                else:
                    key = f"{PREFIX}/{sha256[:2]}/{sha256}"
                    try:
                        data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    except Exception:  # any failure means the bytes cannot be read there
                        self.problem("blob_missing", f"{version.instance_id}/{name}")
                        continue
                if hashlib.sha256(data).hexdigest() != sha256:
                    self.problem("attachment_differs", f"{version.instance_id}/{name} in store")
        return f"store directly ({len(delivered)} versions)"

    def storage_verify(self) -> str:
        """Run ``merit storage verify``: every catalogued blob present with its SHA-256."""
        result = self.sim.merit("storage", "verify")
        last = (result.stdout.strip().splitlines() or [""])[-1]
        if result.returncode != 0:
            for line in result.stdout.splitlines()[:-1]:
                self.problem("verify_problem", line)
        return last

    def check_exports(self) -> dict[str, Any]:
        """Each record's current version once in the CSV export (API and ``merit export``)."""
        sim = self.sim
        expected: dict[str, dict[str, str]] = defaultdict(dict)  # form -> root -> current id
        with sim.ledger.lock:
            for root, chain in sim.ledger.chains.items():
                delivered = [i for i in chain if sim.ledger.versions[i].delivered]
                if delivered:
                    form_id = sim.ledger.versions[root].form_id
                    expected[form_id][root] = delivered[-1]
        report = {}
        for form_id in ("field_visit", "needs_assessment", "youth_survey"):
            answer = sim.api("GET", f"/v1/projects/{PROJECT}/forms/{form_id}/submissions.csv")
            if answer.status_code != 200:
                self.problem("export_missing", f"{form_id}: API answered {answer.status_code}")
                continue
            api_rows = self.compare_export(form_id, answer.content, expected[form_id], "API")
            out = sim.workdir / f"{form_id}.csv"
            result = sim.merit("export", str(PROJECT), form_id, "--format", "csv", "-o", str(out))
            if result.returncode != 0:
                self.problem("export_missing", f"{form_id}: merit export failed {result.stderr}")
                continue
            cli_rows = self.compare_export(form_id, out.read_bytes(), expected[form_id], "CLI")
            report[form_id] = {"records": len(expected[form_id]), "api": api_rows, "cli": cli_rows}
        return report

    def compare_export(
        self, form_id: str, content: bytes, expected: dict[str, str], via: str
    ) -> int:
        """Compare one CSV export with the records delivered; return its number of rows."""
        rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))
        keys = Counter(row["KEY"] for row in rows)
        for key, count in keys.items():
            if count > 1:
                self.problem("export_duplicate", f"{via} {form_id}: {key} x{count}")
            if key not in expected:
                self.problem("export_unknown", f"{via} {form_id}: {key}")
        for root in expected:
            if root not in keys:
                self.problem("export_missing", f"{via} {form_id}: {root}")
        id_column = next((c for c in (rows[0] if rows else {}) if c.endswith("instanceID")), None)
        if id_column:
            for row in rows:
                if row["KEY"] in expected and row[id_column] != expected[row["KEY"]]:
                    self.problem(
                        "export_missing",
                        f"{via} {form_id}: {row['KEY']} shows {row[id_column]}, not the current "
                        f"{expected[row['KEY']]}",
                    )
        return len(rows)

    def read_blobs(self, connection: sa.Connection) -> dict[str, Any]:
        """Read the blob catalogue and what references it."""
        blobs = dict(connection.execute(sa.text("SELECT id, sha256 FROM blobs")).all())
        referenced = set()
        for query in (
            "SELECT blob_id FROM submission_attachments WHERE blob_id IS NOT NULL",
            "SELECT blob_id FROM form_attachments WHERE blob_id IS NOT NULL",
            "SELECT xls_blob_id FROM form_versions WHERE xls_blob_id IS NOT NULL",
            # Files of payloads sent again with other answers, kept for a coordinator.
            "SELECT blob_id FROM submission_conflict_files",
        ):
            referenced.update(connection.execute(sa.text(query)).scalars())
        return {"blobs": blobs, "referenced": referenced}

    def check_blobs(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Every Blob row referenced and stored; every object in the bucket catalogued."""
        sim = self.sim
        blobs: dict[int, str] = facts["blobs"]
        unreferenced = sorted(
            sha for blob_id, sha in blobs.items() if blob_id not in facts["referenced"]
        )
        in_bucket = set()
        client = sim.s3.client()
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{PREFIX}/"
        ):
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                if len(name) == 64:
                    in_bucket.add(name)
        catalogued = set(blobs.values())
        spooled = set(sim.spool_files())
        uncatalogued = sorted(in_bucket - catalogued)
        nowhere = sorted(catalogued - in_bucket - spooled)
        for sha in nowhere:
            self.problem("blob_missing", f"blob {sha} in neither the bucket nor the spool")
        for sha in unreferenced[:20]:
            self.problems.append(f"orphan blob row (referenced by nothing): {sha}")
        for sha in uncatalogued[:20]:
            self.problems.append(f"orphan object (in the bucket, no Blob row): {sha}")
        return {
            "blobs_catalogued": len(blobs),
            "objects_in_bucket": len(in_bucket),
            "orphan_blob_rows": len(unreferenced),
            "orphan_objects": len(uncatalogued),
        }


# ---- the command -------------------------------------------------------------------------------


def print_summary(summary: dict[str, Any]) -> None:
    """Print the summary as a readable block."""
    s = summary
    network = s["network"]
    lines = [
        "",
        "Field simulation",
        f"  tablets                      {s['tablets']}",
        f"  records filled / delivered   {s['records_filled']} / {s['records_delivered']}",
        f"  edits made / delivered       {s['edits_made']} / {s['edits_delivered']}",
        f"  versions never delivered     {s['versions_undelivered']}",
        f"  HEADs / POSTs                {s['heads']} / {s['posts']} "
        f"({s['split_sends']} sends split over several POSTs)",
        f"  send attempts / retries      {s['send_attempts']} / {s['retries']}",
        f"  duplicates absorbed          {s['duplicates_absorbed']} (answers 'already received')",
        f"  503s (Retry-After honoured)  {s['status_503']} ({s['retry_after_honoured']})",
        f"  POST answers by status       {s['statuses']}",
        f"  failed attempts by reason    {s['failures_by_reason']}",
        f"  form polls / downloads       {s['form_polls']} / {s['form_downloads']} "
        f"(hash mismatches {s['form_hash_mismatches']})",
        f"  network faults               requests {network.get('requests', 0)}, drops "
        f"{network.get('drop', 0)}, stalls {network.get('stall', 0)}, lost responses "
        f"{network.get('lose_response', 0)}, duplicated {network.get('duplicate', 0)}, "
        f"502s {network.get('bad_gateway', 0)}",
        f"  faults injected              {s['faults']}",
        f"  elapsed                      {s['elapsed_seconds']} s (tablets {s['load_seconds']} s)",
        f"  API check                    {s['api_check']}",
        f"  merit storage verify         {s['storage_verify']}",
        "  exports (records/API/CLI)    "
        + ", ".join(f"{f} {e['records']}/{e['api']}/{e['cli']}" for f, e in s["exports"].items()),
        f"  blobs catalogued / in bucket {s['blobs_catalogued']} / {s['objects_in_bucket']}",
        f"  orphan blob rows / objects   {s['orphan_blob_rows']} / {s['orphan_objects']}",
        f"  spooled, never drained       {s['spooled_never_drained']}",
        f"  unknown records on server    {s['unknown_on_server']} (conflicts kept "
        f"{s['conflicts_kept']})",
        f"  final answers incomplete     {s['final_answer_incomplete']}",
        f"  LOSSES                       {s['losses']}",
        f"  DUPLICATES ON SERVER         {s['duplicates_on_server']}",
        f"  MISMATCHES                   {s['mismatches']}",
    ]
    if s["problems"]:
        lines.append("  findings:")
        lines += [f"    {p}" for p in s["problems"][:60]]
    print("\n".join(lines), flush=True)


def failed(summary: dict[str, Any]) -> bool:
    """Tell whether the run proved a loss, a duplicate, a mismatch or an unfinished record."""
    return bool(
        summary["losses"]
        or summary["duplicates_on_server"]
        or summary["mismatches"]
        or summary["unknown_on_server"]
        or summary["versions_undelivered"]
        or summary["final_answer_incomplete"]
        or summary["form_hash_mismatches"]
        or summary["tablet_crashes"]
        or summary["fault_errors"]
        # Every Blob row is written in the transaction that references it: one referenced by
        # nothing is a bug (objects without a row are what a crash between the store's write
        # and the commit leaves, by design: reported, not failed).
        or summary["orphan_blob_rows"]
        # No tablet ever sends other XML under an instanceID: a kept conflict is a bug.
        or summary["conflicts_kept"]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--tablets", type=int, default=20, help="simulated tablets (app users)")
    add("--records", type=int, default=500, help="new records filled in all")
    add("--edit-rate", type=float, default=0.1, help="chance a step edits a delivered record")
    add("--seed", type=int, default=1)
    add("--photo-min-kb", type=int, default=50)
    add("--photo-max-kb", type=int, default=500)
    add("--max-upload-bytes", type=int, default=800_000, help="what the server accepts/advertises")
    add("--spool-max-bytes", type=int, default=3_000_000, help="the server's spool bound")
    add("--upload-stall-seconds", type=int, default=10, help="server gives up a stalled body")
    add("--workers", type=int, default=2)
    add("--threads", type=int, default=16)
    add("--faults", default=",".join(FAULT_KINDS), help="comma-separated kinds, or 'none'")
    add("--fault-from", type=float, default=0.05, help="earliest fault, fraction of records")
    add("--fault-to", type=float, default=0.7, help="latest fault, fraction of records")
    add("--hold-fraction", type=float, default=0.8, help="records held until faults are done")
    add("--drop", type=float, default=0.03, help="rate of connections dropped mid-body")
    add("--stall", type=float, default=0.02, help="rate of stalled requests")
    add("--lose-response", type=float, default=0.03, help="rate of responses lost")
    add("--duplicate", type=float, default=0.04, help="rate of requests sent twice")
    add("--stall-min", type=float, default=1.0)
    add("--stall-max", type=float, default=20.0)
    add("--timeout", type=float, default=15.0, help="tablet timeout (Collect: 60 s)")
    add("--time-scale", type=float, default=0.05, help="factor applied to Retry-After")
    add("--backoff-base", type=float, default=0.25)
    add("--backoff-cap", type=float, default=8.0)
    add("--max-attempts", type=int, default=30, help="attempts per record before the sweep")
    add("--think-seconds", type=float, default=0.3, help="pause between a tablet's steps")
    add("--form-poll-seconds", type=float, default=20.0, help="form list polled this often")
    add("--s3-outage-min", type=float, default=2.0)
    add("--s3-outage-max", type=float, default=6.0)
    add("--spool-full-max-seconds", type=float, default=60.0)
    add("--sweep-seconds", type=float, default=120.0, help="final sweep time limit")
    add("--fault-gap", type=float, default=3.0, help="seconds of calm after each fault")
    add("--drain-seconds", type=float, default=180.0, help="wait this long for the spool")
    add("--max-minutes", type=float, default=60.0, help="stop the tablets after this long")
    add("--api-sample", type=int, default=0, help="versions checked through the API (0: all)")
    add("--server-log-level", default="INFO")
    add("--workdir", help="folder for the run (default: a new temporary folder)")
    add("--keep", action="store_true", help="keep the run's folder even when it passed")
    add("--summary-json", help="also write the summary to this file")
    opts = parser.parse_args(argv)
    opts.faults = [] if opts.faults == "none" else [k for k in opts.faults.split(",") if k]
    unknown = set(opts.faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the simulation; print the summary; return 1 on any loss, duplicate or mismatch."""
    opts = parse_args(argv)
    sim = Simulation(opts)
    summary: dict[str, Any] | None = None
    try:
        summary = sim.run()
    finally:
        sim.stop()
    print_summary(summary)
    summary["workdir"] = str(sim.workdir)
    if opts.summary_json:
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    bad = failed(summary)
    if bad or opts.keep:
        print(f"run folder kept: {sim.workdir}", flush=True)
    else:
        shutil.rmtree(sim.workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
