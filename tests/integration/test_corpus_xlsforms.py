"""Forty real XLSForms written by others (../shared/corpus/xlsforms): a form or a clean 400 each.

Never an unexpected exception: pyxform raises TypeError and friends on real files, and the
server must still answer a 400 that names the file and, where pyxform knows it, the row.
Run with ``-s`` to see the table of outcomes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server import errors
from server.forms import compiler, schema
from tests.support import factories

pytestmark = pytest.mark.slow

CONTENT_TYPES = {
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xlsm": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xls": "application/vnd.ms-excel",
    ".csv": "text/csv",
}


@pytest.fixture
def corpus(shared_dir: Path) -> list[Path]:
    folder = shared_dir / "corpus" / "xlsforms"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the corpus test needs the shared XLSForm corpus")
    files = sorted(path for path in folder.iterdir() if path.is_file())
    assert files, f"{folder} is empty"
    return files


def table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'file':<{width}}  outcome  first error (row)", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {outcome:<7}  {detail}" for name, outcome, detail in rows]
    return "\n".join(lines)


def describe(details: dict) -> str:
    first = details["errors"][0]
    where = f" (row {first['row']})" if first["row"] is not None else ""
    return first["message"][:110] + where


def test_every_corpus_file_through_the_http_endpoint(client, db_session, corpus):
    factories.user(db_session, "admin@example.org", role="admin")
    token = client.post(
        "/v1/sessions", json={"email": "admin@example.org", "password": factories.PASSWORD}
    ).json["token"]
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    rows = []
    for path in corpus:
        # One project per file: two corpus forms may share a formID.
        project = factories.project(db_session, path.stem[:200])
        response = client.post(
            f"/v1/projects/{project.id}/forms?ignoreWarnings=true",
            data=path.read_bytes(),
            headers={
                **headers,
                "Content-Type": CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                "Content-Disposition": f'attachment; filename="{path.name}"',
                "X-XlsForm-FormId-Fallback": path.stem,
            },
        )
        assert response.status_code in (200, 400), (path.name, response.status_code, response.json)
        if response.status_code == 200:
            form_id = response.json["xmlFormId"]
            assert form_id and response.json["hash"]
            # The draft the server keeps is the XForm pyxform made, with a usable field schema.
            xml = client.get(
                f"/v1/projects/{project.id}/forms/{form_id}/draft.xml", headers=headers
            ).data
            extracted = schema.extract(xml)
            assert extracted["formId"] == form_id and extracted["fields"]
            rows.append((path.name, "form", f"{form_id}: {len(extracted['fields'])} fields"))
        else:
            problem = response.json
            assert problem["code"] == 400.15 and path.name in problem["message"]
            assert problem["details"]["filename"] == path.name
            first = problem["details"]["errors"][0]
            assert first["message"].strip()
            # Where pyxform's message gives a row, the structure carries it.
            if "[row : " in first["message"]:
                assert isinstance(first["row"], int), first
            rows.append((path.name, "400", describe(problem["details"])))
    print("\n" + table(rows))
    print(
        f"HTTP: forms {sum(o == 'form' for _, o, _ in rows)}, "
        f"400s {sum(o == '400' for _, o, _ in rows)}, of {len(rows)}"
    )


@pytest.mark.skipif(not compiler.java_available(), reason="Java is not installed")
def test_odk_validate_catches_what_pyxform_lets_through(corpus):
    path = next((p for p in corpus if p.name.endswith("large_cha.xlsx")), None)
    if path is None:
        pytest.skip("large_cha.xlsx is not in this corpus")
    with pytest.raises(errors.XlsformInvalid) as caught:
        compiler.compile_upload(path.read_bytes(), filename=path.name, validate=True)
    assert "Cycle detected" in caught.value.details["errors"][0]["message"]
