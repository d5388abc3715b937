"""The field schema, checked value by value: the contract intake and exports are written to."""

from __future__ import annotations

import pytest

from server.forms import compiler, schema, xform
from tests.fixtures.forms import workbooks

FR, EN = "Français (fr)", "English (en)"


def field(path: str, kind: str = "field", type_: str = "string", **values) -> dict:
    """One expected field: every key of the contract, the defaults being the empty values."""
    expected = {
        "path": path,
        "name": path.rsplit("/", 1)[-1],
        "kind": kind,
        "type": type_,
        "control": None,
        "mediatype": None,
        "labels": {},
        "choices": None,
        "parent": None,
        "repeat": None,
        "repeats": [],
        "required": False,
        "readonly": False,
        "relevant": None,
        "calculate": None,
        "constraint": None,
        "preload": None,
        "preloadParams": None,
        "pii": False,
        "audit": False,
    }
    unknown = set(values) - set(expected)
    assert not unknown, unknown
    expected.update(values)
    return expected


def both(fr: str, en: str) -> dict[str, str]:
    return {FR: fr, EN: en}


@pytest.fixture(scope="module")
def household() -> compiler.CompiledForm:
    return compiler.compile_upload(workbooks.data("household.md"), filename="household.md")


@pytest.fixture(scope="module")
def extracted(household) -> dict:
    return schema.extract(
        household.xml, pii=household.pii, files={"villages.csv": workbooks.data("villages.csv")}
    )


def test_form_level_values(extracted):
    assert extracted["formId"] == "household"
    assert extracted["version"] == "2024050701"
    assert extracted["title"] == "Enquête ménage"
    assert extracted["root"] == "data"
    assert extracted["languages"] == [FR, EN]
    assert extracted["defaultLanguage"] == FR
    assert extracted["instanceName"] == "concat( /data/respondent/name )"
    assert extracted["publicKey"] is None
    assert extracted["submissionUrl"] is None
    assert extracted["media"] == [
        {"name": "besoins.png", "type": "image"},
        {"name": "needs.png", "type": "image"},
        {"name": "villages.csv", "type": "file"},
    ]
    assert list(extracted) == [
        "formId",
        "version",
        "title",
        "root",
        "languages",
        "defaultLanguage",
        "instanceName",
        "publicKey",
        "submissionUrl",
        "media",
        "choiceLists",
        "fields",
        "entitiesVersion",
        "entities",
    ]
    assert extracted["entitiesVersion"] is None and extracted["entities"] == []


def test_choice_lists_in_both_languages_including_the_external_csv(extracted):
    assert extracted["choiceLists"] == {
        "file:villages.csv": [
            {"name": "segou", "labels": both("Ségou", "Segou")},
            {"name": "bla", "labels": both("Bla", "Bla")},
        ],
        "needs": [
            {"name": "water", "labels": both("Eau", "Water")},
            {"name": "food", "labels": both("Nourriture", "Food")},
            {"name": "shelter", "labels": both("Abri", "Shelter")},
        ],
        "sex": [
            {"name": "f", "labels": both("Féminin", "Female")},
            {"name": "m", "labels": both("Masculin", "Male")},
        ],
    }


def test_every_field_value_by_value(extracted):
    household, member = "/data/household", "/data/household/member"
    expected = [
        field("/data/start", type_="dateTime", preload="timestamp", preloadParams="start"),
        field("/data/today", type_="date", preload="date", preloadParams="today"),
        field("/data/respondent", "group", "group", labels=both("Répondant", "Respondent")),
        field(
            "/data/respondent/name",
            control="input",
            labels=both("Nom", "Name"),
            parent="/data/respondent",
            required=True,
            pii=True,
        ),
        field(
            "/data/respondent/age",
            type_="int",
            control="input",
            labels=both("Âge", "Age"),
            parent="/data/respondent",
            required=True,
            constraint=". >= 15",
        ),
        field(
            "/data/village",
            type_="select_one",
            control="select1",
            labels=both("Village", "Village"),
            choices="file:villages.csv",
        ),
        field(
            "/data/location",
            type_="geopoint",
            control="input",
            labels=both("Position", "Location"),
        ),
        field(
            "/data/photo",
            type_="binary",
            control="upload",
            mediatype="image/*",
            labels=both("Photo du site", "Site photo"),
            pii=True,
        ),
        field(
            "/data/needs",
            type_="select_multiple",
            control="select",
            labels=both("Besoins", "Needs"),
            choices="needs",
        ),
        field(
            "/data/priorities",
            type_="rank",
            control="rank",
            labels=both("Priorités", "Priorities"),
            choices="needs",
        ),
        field(
            household,
            "repeat",
            "repeat",
            labels=both("Ménage", "Household"),
            relevant=" /data/respondent/age  >= 18",
        ),
        field(
            f"{household}/head",
            control="input",
            labels=both("Chef de ménage", "Head of household"),
            parent=household,
            repeat=household,
            repeats=[household],
            pii=True,
        ),
        field(
            member,
            "repeat",
            "repeat",
            labels=both("Membre", "Member"),
            parent=household,
            repeat=household,
            repeats=[household],
        ),
        field(
            f"{member}/member_name",
            control="input",
            labels=both("Nom du membre", "Member's name"),
            parent=member,
            repeat=member,
            repeats=[household, member],
            pii=True,
        ),
        field(
            f"{member}/sex",
            type_="select_one",
            control="select1",
            labels=both("Sexe", "Sex"),
            choices="sex",
            parent=member,
            repeat=member,
            repeats=[household, member],
        ),
        field("/data/household_count", calculate="count( /data/household )"),
        field(
            "/data/thanks",
            control="input",
            labels=both("Merci, ${name}", "Thank you, ${name}"),
            readonly=True,
        ),
        field("/data/meta", "group", "group"),
        field("/data/meta/audit", type_="binary", parent="/data/meta", audit=True),
        field("/data/meta/instanceID", parent="/data/meta", readonly=True, preload="uid"),
        field(
            "/data/meta/instanceName",
            parent="/data/meta",
            calculate="concat( /data/respondent/name )",
        ),
    ]
    assert [f["path"] for f in extracted["fields"]] == [f["path"] for f in expected]
    for actual, wanted in zip(extracted["fields"], expected, strict=True):
        assert actual == wanted, actual["path"]


def test_repeats_appear_once_though_pyxform_writes_them_twice(household):
    assert household.xml.count("<member") >= 2  # the jr:template copy and the first instance
    paths = [f["path"] for f in schema.extract(household.xml)["fields"]]
    assert len(paths) == len(set(paths))


def test_external_csv_list_is_empty_until_the_file_is_known(household):
    without = schema.extract(household.xml, pii=household.pii)
    assert without["choiceLists"]["file:villages.csv"] == []
    assert schema.file_choice_files(without) == ["villages.csv"]
    assert schema.pii_paths(without) == {
        "/data/respondent/name",
        "/data/photo",
        "/data/household/head",
        "/data/household/member/member_name",
    }


def test_pii_accepts_absolute_paths(household):
    marked = schema.extract(household.xml, pii={"/data/location"})
    assert [f["path"] for f in marked["fields"] if f["pii"]] == ["/data/location"]


def test_single_language_form_has_no_languages_and_default_labels():
    form = compiler.compile_upload(workbooks.data("simple.md"), filename="simple.md")
    extracted = schema.extract(form.xml)
    assert extracted["languages"] == [] and extracted["defaultLanguage"] is None
    assert extracted["fields"][0]["labels"] == {"default": "Nom"}
    assert extracted["media"] == [] and extracted["choiceLists"] == {}


def test_external_choices_need_itemsets_csv():
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
"""
    form = compiler.compile_upload(markdown.encode(), filename="ext.md")
    extracted = schema.extract(form.xml)
    assert {"name": "itemsets.csv", "type": "file"} in extracted["media"]
    cercle = next(f for f in extracted["fields"] if f["name"] == "cercle")
    assert (cercle["control"], cercle["choices"]) == ("input", None)


HAND_WRITTEN = """<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
        xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms">
  <h:head>
    <h:title>Écrit à la main</h:title>
    <model>
      <instance>
        <enquete id="manuel" orx:version="2">
          <couleur/><groupe><note_libre/></groupe>
          <orx:meta><orx:instanceID/></orx:meta>
        </enquete>
      </instance>
      <instance id="villes" src="jr://file/villes.xml"/>
      <submission action="https://example.org/submission" method="post"
                  base64RsaPublicKey="MIIBIjANBgkq"/>
      <bind nodeset="/enquete/couleur" type="select1" required="true()"/>
      <bind nodeset="/enquete/groupe/note_libre" type="xsd:string"/>
    </model>
  </h:head>
  <h:body>
    <select1 ref="/enquete/couleur">
      <label>Couleur <output value="/enquete/groupe/note_libre"/>?</label>
      <item><label>Rouge</label><value>r</value></item>
      <item><label>Bleu</label><value>b</value></item>
    </select1>
    <group ref="/enquete/groupe">
      <input ref="note_libre"><label>Note</label></input>
    </group>
    <upload ref="/enquete/audio" mediatype="audio/*"><label>Son</label>
      <hint><output value="jr://audio/consigne.mp3"/></hint></upload>
  </h:body>
</h:html>
"""


def test_hand_written_xform_inline_items_relative_refs_and_encryption():
    extracted = schema.extract(HAND_WRITTEN)
    assert (extracted["formId"], extracted["version"], extracted["root"]) == (
        "manuel",
        "2",
        "enquete",
    )
    assert extracted["publicKey"] == "MIIBIjANBgkq"
    assert extracted["submissionUrl"] == "https://example.org/submission"
    assert extracted["media"] == [
        {"name": "villes.xml", "type": "file"},
        {"name": "consigne.mp3", "type": "audio"},
    ]
    assert extracted["choiceLists"] == {
        "/enquete/couleur": [
            {"name": "r", "labels": {"default": "Rouge"}},
            {"name": "b", "labels": {"default": "Bleu"}},
        ]
    }
    fields = {f["path"]: f for f in extracted["fields"]}
    assert list(fields) == [
        "/enquete/couleur",
        "/enquete/groupe",
        "/enquete/groupe/note_libre",
        "/enquete/meta",
        "/enquete/meta/instanceID",
    ]
    couleur = fields["/enquete/couleur"]
    assert (couleur["type"], couleur["control"], couleur["choices"]) == (
        "select_one",
        "select1",
        "/enquete/couleur",
    )
    assert couleur["labels"] == {"default": "Couleur ${note_libre}?"}
    assert couleur["required"] is True
    note = fields["/enquete/groupe/note_libre"]
    assert (note["type"], note["control"], note["labels"]) == (
        "string",
        "input",
        {"default": "Note"},
    )
    assert fields["/enquete/groupe"]["kind"] == "group"


def test_not_an_xform_raises():
    with pytest.raises(xform.XFormError):
        schema.extract("<nothing/>")
