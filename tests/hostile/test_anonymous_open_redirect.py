"""An anonymous client crafts a link to this server that sends whoever follows it elsewhere.

The console takes a ``next`` address on the language switch and the sign-in page, to go back
where the person was. A link such as ``/lang/en?next=/%09/evil.example/phish`` looked local but
answered ``Location: //evil.example/phish`` once the browser dropped the tab: a phishing page
reached through our own address. Only paths of this site may come out; anything else goes to
the home page, and no ``next`` makes the server fail (a newline once gave a 500).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.support.site import PASSWORD

pytestmark = pytest.mark.slow

# Each is a way to name another site (or to break the answer) that a naive check lets through.
HOSTILE_TARGETS = [
    "/\t/evil.example/phish",
    "/\n/evil.example/phish",
    "/\r\n/evil.example/phish",
    "/\r\nSet-Cookie: merit_session=planted",
    "\t//evil.example/phish",
    " //evil.example/phish",
    "//evil.example/phish",
    "///evil.example/phish",
    "/\\evil.example/phish",
    "\\\\evil.example/phish",
    "/\t\\evil.example/phish",
    "https://evil.example/phish",
    "https:evil.example/phish",
    "javascript:alert(1)",
    "/\x00/evil.example",
    "/\x7f/evil.example",
    "\x01//evil.example",
]


def where_a_browser_goes(base: str, location: str) -> str:
    """Return the address a browser follows for ``location`` (WHATWG URL parsing, in short)."""
    location = re.sub(r"[\t\n\r]", "", location).strip("\x00- ")
    return urljoin(base + "/", location.replace("\\", "/"))


def assert_stays_on_site(site, answer: requests.Response) -> None:
    assert answer.status_code == 303, answer.text[:500]
    location = answer.headers["Location"]
    followed = urlsplit(where_a_browser_goes(site.url, location))
    assert (followed.scheme, followed.netloc) == ("http", urlsplit(site.url).netloc), location
    assert "evil" not in location


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_the_language_switch_never_sends_anyone_to_another_site(site, target):
    answer = requests.get(
        f"{site.url}/lang/en", params={"next": target}, allow_redirects=False, timeout=30
    )
    assert_stays_on_site(site, answer)


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_the_sign_in_page_never_sends_a_signed_in_person_to_another_site(site, target):
    answer = site.console("viewer").get(
        f"{site.url}/login", params={"next": target}, allow_redirects=False, timeout=30
    )
    assert_stays_on_site(site, answer)


def test_signing_in_never_goes_on_to_another_site(site):
    for target in HOSTILE_TARGETS:
        person = requests.Session()
        form = person.get(f"{site.url}/login", params={"next": target}, timeout=30)
        assert form.status_code == 200
        token = re.search(r'name="login_token" value="([^"]+)"', form.text).group(1)
        answer = person.post(
            f"{site.url}/login",
            data={
                "email": site.emails["formfill"],
                "password": PASSWORD,
                "login_token": token,
                "next": target,
            },
            allow_redirects=False,
            timeout=30,
        )
        assert_stays_on_site(site, answer)
        assert answer.headers["Location"] == "/", repr(target)


def test_a_path_of_this_site_is_still_where_the_switch_goes_back_to(site):
    back = f"/projects/{site.project_id}?q=été&state=hasIssues"
    answer = requests.get(
        f"{site.url}/lang/en", params={"next": back}, allow_redirects=False, timeout=30
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == (
        f"/projects/{site.project_id}?q=%C3%A9t%C3%A9&state=hasIssues"
    )


def test_the_old_projects_address_keeps_its_query_and_stays_on_site(site):
    # url_for's own options (_method, _scheme, _external) once came from the query: a 500, or
    # an absolute address built by the server.
    for query in ("_method=PUT", "_external=1&_scheme=javascript", "state=a&state=b"):
        answer = site.console("viewer").get(
            f"{site.url}/projects?{query}", allow_redirects=False, timeout=30
        )
        assert answer.status_code == 303
        assert answer.headers["Location"] == f"/?{query}"
