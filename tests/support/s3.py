"""A real S3-protocol server for tests: moto in server mode, in its own process, over HTTP.

The code under test talks to it through boto3, unpatched, exactly as it talks to MinIO or AWS:
only the standard variables (``AWS_ENDPOINT_URL_S3``, keys, region) point it there. Nothing
in-process is mocked.

    server = S3Server(tmp_path).start()
    bucket = server.create_bucket()
    monkeypatch.setenv(...) for each of server.env, then MERIT_STORAGE_URL=s3://<bucket>/prefix
    server.stop(); ...; server.start()      # an outage, and the store coming back

moto keeps its state in memory. With ``persist=True`` the server records every request it
receives (moto's recorder) and :meth:`S3Server.start` replays the recording, so a restarted
server comes back with its buckets and objects, like a real store after an outage. Replay
restores buckets and single-request uploads; a multipart upload does not survive a restart
(its upload id is drawn anew on replay), so outage tests use files below the multipart
threshold.

Fixtures, for test modules to bind (``s3_server = s3.s3_server``; pytest finds fixtures by
module attribute, and an import would trip ruff's F811 on each use):

* ``s3_server``: one server per test session (xdist worker), never stopped by a test;
* ``s3_bucket``: a fresh, empty bucket on it, with the process environment pointed at it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from tests.support.servers import free_port

ACCESS_KEY = "merit-test-access"
SECRET_KEY = "merit-test-secret"  # moto accepts any credentials; these open nothing
REGION = "us-east-1"


class S3Server:
    """moto's S3 server in a subprocess on a fixed port, which may be stopped and restarted."""

    def __init__(self, workdir: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.persist = persist
        self.recording = self.workdir / "moto-recording.jsonl"
        self.log_path = self.workdir / "moto.log"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and so the server) at this S3 server."""
        absent = str(self.workdir / "no-aws-config")
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            # Keep the developer's own ~/.aws out of the tests.
            "AWS_CONFIG_FILE": absent,
            "AWS_SHARED_CREDENTIALS_FILE": absent,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 30, replay_timeout: float = 120) -> S3Server:
        """Start the server (replaying its recording when persistent); wait until it answers."""
        if self.running:
            return self
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        if self.persist:
            env["MOTO_ENABLE_RECORDING"] = "true"
            env["MOTO_RECORDER_FILEPATH"] = str(self.recording)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited with {self.process.returncode}: {self.log()}")
            try:
                requests.get(f"{self.url}/moto-api/data.json", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    self.stop()
                    message = f"moto did not answer within {timeout}s: {self.log()}"
                    raise RuntimeError(message) from None
                time.sleep(0.05)
        if self.persist and self.recording.exists() and self.recording.stat().st_size:
            self._repair_recording()
            self._replay(replay_timeout)
        return self

    def _replay(self, timeout: float) -> None:
        """Send the recorded writes to the restarted server again, several at a time.

        moto's own replay (``/moto-api/recorder/replay-recording``) sends every recorded
        request, reads included, one after the other: many minutes once thousands of uploads
        are recorded. Reads change nothing and are skipped; bucket requests go first, in
        order; object writes (content-addressed blobs, probes) go eight at a time. Recording
        is paused meanwhile, so the recording does not grow with each restart.
        """
        recorder = f"{self.url}/moto-api/recorder"
        requests.post(f"{recorder}/stop-recording", timeout=30).raise_for_status()
        deadline = time.monotonic() + timeout
        try:
            buckets, objects = [], []
            with self.recording.open(encoding="utf-8") as source:
                for line in source:
                    entry = json.loads(line)
                    if entry.get("method") in ("GET", "HEAD", "OPTIONS"):
                        continue
                    path = urlsplit(entry["url"]).path.strip("/")
                    (objects if "/" in path else buckets).append(entry)
            for entry in buckets:
                self._send(entry, deadline)
            with ThreadPoolExecutor(8) as pool:
                for _ in pool.map(lambda e: self._send(e, deadline), objects):
                    pass
        finally:
            requests.post(f"{recorder}/start-recording", timeout=30).raise_for_status()

    def _send(self, entry: dict, deadline: float) -> None:
        """Send one recorded request to this server (its address may have been a gate's)."""
        recorded = urlsplit(entry["url"])
        url = self.url + recorded.path + (f"?{recorded.query}" if recorded.query else "")
        body = entry.get("body") or b""
        if entry.get("body_encoded"):
            body = base64.b64decode(body)
        headers = {
            name: value
            for name, value in (entry.get("headers") or {}).items()
            if name.lower() not in ("host", "content-length", "transfer-encoding")
        }
        remaining = max(1.0, deadline - time.monotonic())
        requests.request(entry["method"], url, headers=headers, data=body, timeout=remaining)

    def _repair_recording(self) -> None:
        """Put each recorded request on a line of its own again, before moto replays them.

        moto's recorder writes an entry, then its newline, from every thread serving a
        request: under concurrent uploads two entries end up on one line, and the replay
        stops at the first such line (JSONDecodeError, 500). An entry cut short by a stop is
        dropped. Streamed line by line: recordings of many uploads are large.
        """
        decoder = json.JSONDecoder()
        repaired = self.recording.with_suffix(".repaired")
        with self.recording.open(encoding="utf-8") as source, repaired.open("w") as out:
            for line in source:
                position = 0
                while True:
                    while position < len(line) and line[position].isspace():
                        position += 1
                    if position >= len(line):
                        break
                    try:
                        _, end = decoder.raw_decode(line, position)
                    except json.JSONDecodeError:
                        break  # the rest of this line is a fragment
                    out.write(line[position:end] + "\n")
                    position = end
        repaired.replace(self.recording)

    def stop(self) -> None:
        """Stop the server: connections are refused until :meth:`start` is called again."""
        if not self.running:
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    @property
    def running(self) -> bool:
        """Tell whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Return the end of the server's log (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def client(self):
        """An independent boto3 client on this server, for tests to look inside buckets."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh, uniquely named one by default); return its name."""
        name = name or f"merit-test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Return every object of a bucket under a prefix, key to bytes."""
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                found[item["Key"]] = body.read()
        return found

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 server shared by the session's tests (each uses its own bucket)."""
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket, with the environment pointing boto3 at its server."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.create_bucket()
