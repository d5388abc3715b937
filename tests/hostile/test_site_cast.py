"""The stage of the hostile suite is what it claims: each principal is who it says it is."""

from __future__ import annotations

import pytest

from tests.support.site import FORM_ID

pytestmark = pytest.mark.slow


def test_each_principal_reaches_what_its_role_gives(site):
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    assert site.api("manager").get(f"{form}/submissions").status_code == 200
    assert site.api("viewer").get(f"{form}/submissions").status_code == 200
    assert site.api("formfill").get(f"{form}/submissions").status_code == 403
    assert site.api("other_manager").get(f"{form}/submissions").status_code == 403
    assert site.api("anonymous").get(f"{form}/submissions").status_code == 401
    tablet_form_list = f"{site.tablet_base}/formList"
    listed = site.api("anonymous").get(tablet_form_list, headers={"X-OpenRosa-Version": "1.0"})
    assert FORM_ID in listed.text
    page = site.console("viewer").get(f"{site.url}/projects/{site.project_id}")
    assert page.status_code == 200 and FORM_ID in page.text
    assert site.console("viewer").csrf
