"""The compiler: XLSForms and XForms in, XForm text out, every problem a located 400."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from server import errors
from server.forms import compiler, explain, xform
from tests.fixtures.forms import workbooks

SIMPLE_XFORM = """<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml">
  <h:head><h:title>Petit</h:title>
    <model><instance><data id="petit" version="3"><q/></data></instance>
      <bind nodeset="/data/q" type="string"/></model>
  </h:head>
  <h:body><input ref="/data/q"><label>Q</label></input></h:body>
</h:html>
"""


def invalid(data: bytes, **kwargs) -> dict:
    """Compile expecting a 400.15; return its details."""
    with pytest.raises(errors.XlsformInvalid) as caught:
        compiler.compile_upload(data, **kwargs)
    problem = caught.value
    assert problem.code == "400.15" and problem.status == 400
    assert set(problem.details) == {"filename", "errors", "warnings"}
    assert problem.details["errors"], "a 400.15 always says what is wrong"
    return problem.details


# ---- XLSForms --------------------------------------------------------------------------------


def test_markdown_xlsform_compiles_with_identity_title_and_pii():
    form = compiler.compile_upload(workbooks.data("household.md"), filename="household.md")
    assert (form.form_id, form.version, form.title) == ("household", "2024050701", "Enquête ménage")
    assert form.file_type == ".md" and form.from_spreadsheet
    assert form.xml.startswith("<?xml") and 'id="household"' in form.xml
    assert form.pii == {
        "respondent/name",
        "photo",
        "household/head",
        "household/member/member_name",
    }
    assert form.warnings == [] and form.itemsets is None
    assert form.validation.verdict == "skipped"


def test_xlsx_gives_the_same_xform_as_its_markdown():
    markdown = workbooks.text("household.md")
    from_xlsx = compiler.compile_upload(workbooks.xlsx(markdown), filename="household.xlsx")
    from_md = compiler.compile_upload(markdown.encode(), filename="household.md")
    assert from_xlsx.xml == from_md.xml
    assert from_xlsx.pii == from_md.pii
    assert from_xlsx.file_type == ".xlsx"


def test_warnings_carry_sheet_row_and_column():
    form = compiler.compile_upload(workbooks.data("warnings.md"), filename="warnings.md")
    assert len(form.warnings) == 1
    warning = form.warnings[0].to_json()
    assert (warning["sheet"], warning["row"], warning["column"]) == ("choices", 2, "label")
    # Said for the coordinator; pyxform's sentence kept beside it, its row in its own column.
    assert warning["message"] == "This choice has no label: tablets would show an empty line."
    assert warning["original"].startswith("On the 'choices' sheet")


def test_pyxform_error_names_file_sheet_row_and_column():
    details = invalid(workbooks.data("broken.md"), filename="broken.md")
    assert details["filename"] == "broken.md"
    [error] = details["errors"]
    assert (error["sheet"], error["row"], error["column"]) == ("survey", 3, "name")
    assert "“q1” is used twice" in error["message"]
    assert "'q1' is invalid" in error["original"]


def test_pyxform_crash_with_a_type_error_becomes_a_clean_400():
    # pyxform 4.5 raises TypeError on an instance::tag column in a group row (a real CHT form).
    details = invalid(workbooks.data("crash.md"), filename="crash.md")
    assert "TypeError" in details["errors"][0]["message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[row : 5] Question with no type.", ("survey", 5, "type")),
        ("[sheet: survey] [row : 3] [column : type] Unknown question type.", ("survey", 3, "type")),
        (
            "[row : 7] On the 'choices' sheet, the 'name' value is invalid.",
            ("choices", 7, "name"),
        ),
        ("Invalid headers provided for sheet: 'survey'.", ("survey", None, None)),
        (
            "The xls file provided has an invalid date on the survey sheet, under the default "
            "column on row number 4",
            ("survey", 4, "default"),
        ),
        ("Language 'English' is missing the survey hint column.", ("survey", None, "hint")),
        ("Language 'fr' is missing the survey columns audio, video.", ("survey", None, None)),
        ("You must have a sheet named 'survey'.", (None, None, None)),
    ],
)
def test_locate_reads_pyxform_message_shapes(text, expected):
    message = compiler.locate(text)
    assert (message.sheet, message.row, message.column) == expected
    assert "[row" not in message.message
    assert (message.original or message.message) == explain.without_row(text)


def test_locate_prefers_pyxform_context():
    message = compiler.locate("something", {"row": 9, "sheet": "entities", "column": "label"})
    assert (message.sheet, message.row, message.column) == ("entities", 9, "label")


def test_fallback_form_id_when_settings_has_none():
    markdown = b"| survey |\n| | type | name | label |\n| | text | q | Q |\n"
    by_header = compiler.compile_upload(markdown, filename="a.md", form_id_fallback="enquete_2024")
    assert by_header.form_id == "enquete_2024"
    by_name = compiler.compile_upload(markdown, filename="Enquête ménage v2.md")
    assert by_name.form_id == "Enquête_ménage_v2"


def test_form_id_that_would_break_urls_is_refused():
    markdown = workbooks.simple(form_id="menage.xml").encode()
    details = invalid(markdown, filename="menage.md")
    assert details["errors"][0]["sheet"] == "settings"
    assert details["errors"][0]["column"] == "form_id"


def test_external_choices_give_itemsets():
    markdown = """
| survey |
| | type | name | label | choice_filter |
| | select_one region | region | Region | |
| | select_one_external cercle | cercle | Cercle | region=${region} |
| choices |
| | list_name | name | label |
| | region | kayes | Kayes |
| external_choices |
| | list_name | name | label | region |
| | cercle | bafoulabe | Bafoulabé | kayes |
| settings |
| | form_id |
| | ext |
""".encode()
    form = compiler.compile_upload(markdown, filename="ext.md")
    assert form.itemsets is not None
    assert b"bafoulabe" in form.itemsets and b"list_name" in form.itemsets


# ---- unreadable and hostile files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kwargs"),
    [
        (b"\x00\x01binary junk", {"filename": "form.pdf"}),
        (b"\x00\x01binary junk", {}),
        (b"not a workbook", {"filename": "form.xlsx"}),
        (
            b"not a workbook",
            {"content_type": "application/vnd.ms-excel", "filename": "upload"},
        ),
        (b"   ", {"filename": "empty.md"}),
        (b"PK\x03\x04 truncated zip", {"filename": "form.xlsx"}),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 truncated ole", {"filename": "form.xls"}),
    ],
)
def test_unknown_or_unreadable_files_are_400(data, kwargs):
    details = invalid(data, **kwargs)
    assert details["errors"][0]["message"]


def test_csv_that_is_not_utf8_is_refused_with_advice():
    data = "type,name,label\ntext,q,Quartier délimité\n".encode("cp1252")
    details = invalid(data, filename="form.csv")
    assert "UTF-8" in details["errors"][0]["message"]


def test_zip_bomb_is_refused_before_unpacking():
    bomb = workbooks.zip_bomb(compiler.MAX_UNZIPPED_BYTES + 1)
    assert len(bomb) < 1_000_000  # the whole point: tiny packed, huge unpacked
    details = invalid(bomb, filename="bomb.xlsx")
    assert "too large once unpacked" in details["errors"][0]["message"]


def test_million_row_sheet_is_refused_in_flat_memory():
    workbook = workbooks.streamed_rows(1_000_000)
    tracemalloc.start()
    try:
        details = invalid(workbook, filename="rows.xlsx")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert details["errors"][0]["sheet"] == "survey"
    assert "too many rows" in details["errors"][0]["message"]
    # pyxform would have built a dict per row (hundreds of MB); the scan keeps a few rows.
    assert peak < 20_000_000


def test_sheet_too_wide_is_refused():
    details = invalid(workbooks.wide_sheet(compiler.MAX_SHEET_COLUMNS + 1), filename="wide.xlsx")
    assert "too many columns" in details["errors"][0]["message"]


def test_workbook_with_a_dtd_is_refused():
    details = invalid(workbooks.with_dtd(), filename="laughs.xlsx")
    assert "DTD" in details["errors"][0]["message"]


def test_file_over_the_size_cap_is_refused():
    data = b"| survey |\n" + b"| | text | q | Q |\n" * (compiler.MAX_TEXT_BYTES // 16)
    details = invalid(data, filename="big.md")
    assert "too large" in details["errors"][0]["message"]


# ---- XForm uploads ---------------------------------------------------------------------------


def test_xform_upload_is_kept_as_sent():
    form = compiler.compile_upload(SIMPLE_XFORM.encode(), content_type="application/xml")
    assert form.xml == SIMPLE_XFORM
    assert (form.form_id, form.version, form.title, form.file_type) == (
        "petit",
        "3",
        "Petit",
        ".xml",
    )
    assert not form.from_spreadsheet and form.pii == frozenset()


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (workbooks.BILLION_LAUGHS + "<h:html>&lol3;</h:html>", "DOCTYPE"),
        (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
            "DOCTYPE",
        ),
        ("<data id='x'/>", "h:html"),
        ("<h:html xmlns:h='http://www.w3.org/1999/xhtml'><h:head/></h:html>", "model"),
        (SIMPLE_XFORM.replace(' id="petit"', ""), "id"),
        (SIMPLE_XFORM.replace("</h:html>", ""), "well-formed"),
        (
            SIMPLE_XFORM.replace(
                '<?xml version="1.0"?>', '<?xml version="1.0" encoding="ISO-8859-1"?>'
            ),
            "UTF-8",
        ),
    ],
)
def test_bad_or_hostile_xforms_are_refused(xml, reason):
    details = invalid(xml.encode("utf-8"), filename="form.xml")
    assert reason in details["errors"][0]["message"]


def test_set_version_changes_only_that_attribute():
    changed = xform.set_version(SIMPLE_XFORM, "4 & more")
    assert xform.identity(xform.parse(changed.encode())).version == "4 & more"
    assert changed.replace('version="4 &amp; more"', 'version="3"') == SIMPLE_XFORM
    without = SIMPLE_XFORM.replace(' version="3"', "")
    added = xform.set_version(without, "5")
    assert xform.identity(xform.parse(added.encode())).version == "5"
    assert added.replace(' version="5"', "") == without


# ---- ODK Validate ----------------------------------------------------------------------------

needs_java = pytest.mark.skipif(
    not compiler.java_available(), reason="Java is not installed: ODK Validate cannot run here"
)


@needs_java
def test_odk_validate_passes_a_good_form():
    form = compiler.compile_upload(workbooks.data("household.md"), filename="h.md", validate=True)
    assert form.validation.verdict == "passed"


@needs_java
def test_odk_validate_failure_is_a_400_with_its_message():
    markdown = b"""
| survey |
| | type | name | label | calculation |
| | calculate | a | | ${b} + 1 |
| | calculate | b | | ${a} + 1 |
"""
    details = invalid(markdown, filename="cycle.md", validate=True)
    message = details["errors"][0]["message"]
    assert message.startswith("ODK Validate: ") and "Cycle detected" in message


@needs_java
def test_odk_validate_out_of_time_is_skipped_not_failed():
    result = compiler.odk_validate(SIMPLE_XFORM, timeout=0.001)
    assert result.verdict == "skipped"
    assert "did not finish" in result.messages[0]


def test_without_java_validation_is_recorded_as_skipped(tmp_path: Path, monkeypatch):
    # A PATH with no java on it: what a server without Java looks like to the compiler.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not compiler.java_available()
    form = compiler.compile_upload(workbooks.data("simple.md"), filename="s.md", validate=True)
    assert form.validation.verdict == "skipped"
    assert "Java" in form.validation.messages[0]
    assert os.environ["PATH"] == str(tmp_path)


def test_hash_of_compiled_text_is_stable():
    first = compiler.compile_upload(workbooks.data("household.md"), filename="h.md")
    second = compiler.compile_upload(workbooks.data("household.md"), filename="h.md")
    assert (
        hashlib.md5(first.xml.encode()).hexdigest() == hashlib.md5(second.xml.encode()).hexdigest()
    )


# ---- pyxform's frequent messages, said for the coordinator -----------------------------------


def survey(*rows: str, head: str = "| | type | name | label |", choices: str = "") -> bytes:
    return ("| survey |\n" + head + "\n" + "\n".join(rows) + "\n" + choices).encode()


FREQUENT = [
    (
        "duplicate name",
        survey("| | text | a | A |", "| | text | a | B |"),
        ("survey", 3, "name"),
        "The name “a” is used twice in the same group.",
    ),
    (
        "unknown type (row found by the type)",
        survey("| | text | a | A |", "| | texte | b | B |"),
        ("survey", 3, "type"),
        "Unknown question type “texte”.",
    ),
    (
        "select without its list",
        survey("| | select_one | a | A |"),
        ("survey", 2, "type"),
        "“select_one” needs the name of its choice list after it",
    ),
    (
        "missing column",
        survey("| | a | A |", head="| | name | label |"),
        ("survey", None, "type"),
        "The survey sheet has no type column.",
    ),
    (
        "no name",
        survey("| | text | | A |"),
        ("survey", 2, "name"),
        "This question or group has no name.",
    ),
    (
        "reserved name",
        survey("| | text | meta | A |"),
        ("survey", 2, "name"),
        "The name “meta” is reserved",
    ),
    (
        "bad reference",
        survey("| | text | a | A | ${zz} = 'x' |", head="| | type | name | label | relevant |"),
        ("survey", 2, "relevant"),
        "The relevant column refers to ${zz}, but no question is named “zz”.",
    ),
    (
        "unknown list",
        survey(
            "| | select_one zz | a | A |",
            choices="| choices |\n| | list_name | name | label |\n| | yn | y | Yes |\n",
        ),
        ("survey", 2, "type"),
        "The choice list “zz” is not in the choices sheet.",
    ),
    (
        "group never closed",
        survey("| | begin group | g | G |", "| | text | a | A |"),
        ("survey", 2, "type"),
        "“g” is opened here but never closed",
    ),
    (
        "neither label nor hint (row found by the name)",
        survey("| | text | a | A |", "| | text | b | |"),
        ("survey", 3, "label"),
        "The question “b” has neither a label nor a hint",
    ),
]


@pytest.mark.parametrize(
    ("case", "data", "where", "english"), FREQUENT, ids=[c[0] for c in FREQUENT]
)
def test_frequent_pyxform_errors_are_explained_and_located(case, data, where, english):
    [error] = invalid(data, filename="f.md")["errors"]
    assert (error["sheet"], error["row"], error["column"]) == where, error
    assert error["message"].startswith(english), error
    assert error["original"] and "[row" not in error["original"] + error["message"]


def test_repeat_without_label_is_a_located_explained_warning():
    form = compiler.compile_upload(
        survey("| | begin repeat | r | |", "| | text | a | A |", "| | end repeat | | |"),
        filename="r.md",
    )
    [warning] = [w.to_json() for w in form.warnings]
    assert (warning["sheet"], warning["row"], warning["column"]) == ("survey", 2, "label")
    assert warning["message"].startswith("The repeat “r” has no label")


def test_explanations_are_french_for_a_french_reader(bare_app):
    with bare_app.test_request_context(headers={"Accept-Language": "fr"}):
        [error] = invalid(survey("| | texte | a | A |"), filename="f.md")["errors"]
    assert error["message"].startswith("Type de question inconnu : « texte »")
    assert error["original"] == "Unknown question type 'texte'."


def test_an_unknown_pyxform_message_stays_pyxform_sentence_without_its_row():
    message = compiler.locate("[row : 4] Something pyxform says one day.")
    assert (message.message, message.row, message.original) == (
        "Something pyxform says one day.",
        4,
        None,
    )
