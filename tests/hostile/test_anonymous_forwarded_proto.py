"""A client claiming HTTPS in a header it may not set (issue 16, item 8).

Basic authentication sends the password in clear, so it is accepted over HTTPS only. Whether a
request came over HTTPS is read from ``X-Forwarded-Proto`` only when ``MERIT_TRUST_PROXY`` says
that many proxies stand in front; with ``MERIT_TRUST_PROXY=0`` (the default) no forwarded header
is believed, from any address: gunicorn's own default trusted them from 127.0.0.1, so anyone with
a shell on the server (or a local process) could send a password over plain HTTP.
"""

from __future__ import annotations

import pytest
import requests

from tests.support.servers import ServerProcess, server_env
from tests.support.site import ADMIN_EMAIL, PASSWORD

pytestmark = pytest.mark.slow

# gunicorn's secure_scheme_headers, and the header ProxyFix reads.
CLAIMS = [
    {"X-Forwarded-Proto": "https"},
    {"X-Forwarded-Protocol": "ssl"},
    {"X-Forwarded-Ssl": "on"},
]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda claim: next(iter(claim)))
def test_basic_over_plain_http_is_refused_whatever_a_local_client_claims(site, claim):
    answer = requests.get(
        f"{site.url}/v1/users/current",
        auth=(ADMIN_EMAIL, PASSWORD),
        headers=claim,
        timeout=30,
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == 401.3  # HttpsOnly: this way of signing in needs HTTPS


def test_behind_a_trusted_proxy_its_forwarded_proto_is_believed(database_url, tmp_path):
    env = server_env(
        database_url,
        tmp_path,
        ADMIN_PASSWORD=PASSWORD,
        TRUST_PROXY="1",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        url = f"{server.url}/v1/users/current"
        behind_tls = requests.get(
            url, auth=(ADMIN_EMAIL, PASSWORD), headers={"X-Forwarded-Proto": "https"}, timeout=30
        )
        assert behind_tls.status_code == 200, behind_tls.text
        assert behind_tls.json()["email"] == ADMIN_EMAIL
        # The proxy says the client came over plain HTTP: refused.
        plain = requests.get(
            url, auth=(ADMIN_EMAIL, PASSWORD), headers={"X-Forwarded-Proto": "http"}, timeout=30
        )
        assert plain.status_code == 401
        assert plain.json()["code"] == 401.3
