"""A script in an XForm does not run in the browser of whoever opens it (issue 16, hole 1).

An XForm is an XHTML document: a coordinator of another project can upload one holding an
``<h:script>``, and the site's administrator, signed in to the console, may open its ``.xml``
on the console's origin. Served as ``application/xml`` with no policy, the script ran with the
administrator's session. Now every answer that is not a console page is sandboxed
(``Content-Security-Policy: default-src 'none'; sandbox``, server/web/security.py): proven
here in a real Chromium, signed in as the administrator.
"""

from __future__ import annotations

import pytest

from tests.support import browser as support
from tests.support.openrosa import VILLAGES_CSV, XFORM
from tests.support.site import ADMIN_EMAIL, PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# What the script did first: reach the console with the reader's cookie.
SCRIPT = (
    "document.title = 'script ran';"
    "fetch('/').then(function (r) { document.title = 'script read ' + r.status; });"
)


def test_a_script_in_another_projects_xform_does_not_run_for_the_administrator(site, chromium):
    xform = XFORM.format(form_id="piege", version="1").replace(
        "<h:head>", f"<h:head><h:script>{SCRIPT}</h:script>", 1
    )
    forms = f"{site.url}/v1/projects/{site.other_project_id}/forms"
    other_manager = site.api("other_manager")
    uploaded = other_manager.post(
        forms, data=xform.encode(), headers={"Content-Type": "application/xml"}, timeout=30
    )
    assert uploaded.status_code == 200, uploaded.text
    attached = other_manager.post(
        f"{forms}/piege/draft/attachments/villages.csv",
        data=VILLAGES_CSV,
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert attached.status_code == 200, attached.text
    published = other_manager.post(f"{forms}/piege/draft/publish", timeout=30)
    assert published.status_code == 200, published.text

    context = chromium.new_context(viewport=support.LAPTOP, locale="fr-FR")
    try:
        page = context.new_page()
        support.sign_in(page, site.url, ADMIN_EMAIL, PASSWORD)
        assert page.locator("h1").inner_text() == "Projets"
        opened = page.goto(f"{forms}/piege.xml")
        assert opened is not None and opened.status == 200
        # The document is the XForm (the browser parsed it), and its script never ran: it sets
        # the title as it is parsed, before the load event ``goto`` waits for.
        assert page.evaluate("document.documentElement.localName") == "html"
        assert "script" not in page.evaluate("document.title")
        assert opened.headers["content-security-policy"] == "default-src 'none'; sandbox"
    finally:
        context.close()
