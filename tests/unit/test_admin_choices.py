"""The programme forms' regions and cercles are the reference list, and say what it covers.

``xlsforms/reference/mali_admin2.csv`` is the one place Mali's regions and cercles are written;
``scripts/admin_choices.py`` copies them into the XLSForms' choices sheet. A list edited by hand
in a workbook, or a CSV changed without running the script, fails here; so does a hint whose
count of regions is not the list's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import openpyxl
from lxml import etree

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import admin_choices  # noqa: E402

FORMS = ("needs_assessment", "youth_survey")
XF = {"xf": "http://www.w3.org/2002/xforms", "h": "http://www.w3.org/1999/xhtml"}


def test_the_workbooks_carry_the_reference_list():
    assert sorted(p.stem for p in admin_choices.workbooks()) == list(FORMS)
    assert admin_choices.main(["--check"]) == 0, "run `python scripts/admin_choices.py`"


def test_the_script_rewrites_a_list_edited_by_hand(tmp_path):
    path = tmp_path / "form.xlsx"
    shutil.copy(ROOT / "xlsforms" / "youth_survey.xlsx", path)
    book = openpyxl.load_workbook(path)
    sheet = book["choices"]
    header = [cell.value for cell in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        if row[header.index("list_name")].value == "cercles":
            row[header.index("label::English (en)")].value = "Typed by hand"
            break
    book.save(path)
    lists = admin_choices.reference_rows()
    assert admin_choices.differs(path, lists)
    assert admin_choices.main(["--check", str(path)]) == 1
    assert admin_choices.main([str(path)]) == 0
    assert not admin_choices.differs(path, lists)
    # Nothing else moved: the other lists keep their rows, in their order.
    before = openpyxl.load_workbook(ROOT / "xlsforms" / "youth_survey.xlsx")["choices"]
    after = openpyxl.load_workbook(path)["choices"]
    assert [r for r in before.iter_rows(values_only=True)] == [
        r for r in after.iter_rows(values_only=True)
    ]


def test_the_region_hint_counts_the_regions_of_the_list():
    regions = admin_choices.reference_rows()["regions"]
    names = [row["label"] for row in regions]
    assert "Bamako" in names and "Taoudénit" not in names
    count = len(names) - 1  # and the district of Bamako
    for form_id in FORMS:
        xml = etree.parse(str(ROOT / "forms" / f"{form_id}.xml"))
        for lang, words in (("Français (fr)", "régions"), ("English (en)", "regions")):
            (hint,) = xml.xpath(
                f"//xf:translation[@lang='{lang}']/xf:text[contains(@id, '/region:hint')]"
                "/xf:value/text()",
                namespaces=XF,
            )
            assert f"{count} {words}" in hint and "Bamako" in hint, (form_id, lang, hint)
            assert "Taoudénit" in hint, "say where places of Taoudénit go"


def test_every_region_and_cercle_has_a_label_in_french_and_english():
    lists = admin_choices.reference_rows()
    for form_id in FORMS:
        xml = etree.parse(str(ROOT / "forms" / f"{form_id}.xml"))
        for name, rows in lists.items():
            for lang in ("Français (fr)", "English (en)"):
                labels = xml.xpath(
                    f"//xf:translation[@lang='{lang}']/xf:text[starts-with(@id, '{name}-')]"
                    "/xf:value/text()",
                    namespaces=XF,
                )
                assert labels == [row["label"] for row in rows], (form_id, name, lang)
