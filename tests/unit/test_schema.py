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
    typed = schema.FormSchema.of(without)
    assert typed.file_choice_files == ("villages.csv",)
    assert typed.pii_paths == {
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


# ---- the typed view every reader uses ------------------------------------------------------


def test_typed_schema_keeps_every_value_of_the_dict(extracted):
    typed = schema.FormSchema.of(extracted)
    assert (typed.form_id, typed.version, typed.title, typed.root) == (
        "household",
        "2024050701",
        "Enquête ménage",
        "data",
    )
    assert typed.languages == (FR, EN) and typed.default_language == FR
    assert typed.instance_name == "concat( /data/respondent/name )"
    assert [(m.name, m.type) for m in typed.media] == [
        (m["name"], m["type"]) for m in extracted["media"]
    ]
    for key, items in extracted["choiceLists"].items():
        assert [(c.name, dict(c.labels)) for c in typed.choice_lists[key]] == [
            (i["name"], i["labels"]) for i in items
        ]
    renamed = {"preloadParams": "preload_params"}
    assert [f.path for f in typed.fields] == [f["path"] for f in extracted["fields"]]
    for entry, stored in zip(typed.fields, extracted["fields"], strict=True):
        for key, value in stored.items():
            got = getattr(entry, renamed.get(key, key))
            assert (list(got) if key == "repeats" else got) == value, (entry.path, key)


def test_typed_schema_answers_what_readers_ask(extracted):
    typed = schema.FormSchema.of(extracted)
    household, member = "/data/household", "/data/household/member"
    assert [f.path for f in typed.repeats] == [household, member]
    assert typed.repeat_paths == {household, member}
    assert [f.path for f in typed.binaries] == ["/data/photo", "/data/meta/audit"]
    assert typed.audit_paths == {"/data/meta/audit"}
    assert [f.path for f in typed.selects] == [
        "/data/village",
        "/data/needs",
        "/data/priorities",
        f"{member}/sex",
    ]
    assert [f.name for f in typed.children(household)] == ["head", "member"]
    assert [f.name for f in typed.children("/data/meta")] == ["audit", "instanceID", "instanceName"]
    assert typed.children()[0].path == "/data/start"
    assert typed.field(f"{member}/sex").parts == ("household", "member", "sex")
    assert typed.field("/data/nothing") is None
    assert [c.name for c in typed.choices(typed.field("/data/needs"))] == [
        "water",
        "food",
        "shelter",
    ]
    assert typed.choices(typed.field("/data/respondent/name")) == ()
    assert [f.path for f in typed.questions if f.is_meta] == [
        "/data/meta/audit",
        "/data/meta/instanceID",
        "/data/meta/instanceName",
    ]
    assert typed.field("/data/needs").chosen("water  food") == ["water", "food"]
    assert typed.field("/data/village").chosen("segou") == ["segou"]


def test_values_at_a_path_go_through_every_repeat_instance(extracted):
    typed = schema.FormSchema.of(extracted)
    document = {
        "respondent": {"name": "Awa", "age": "30"},
        "household": [
            {"head": "Moussa", "member": [{"sex": "m", "member_name": " A "}, {"sex": "f"}]},
            {"head": "", "member": []},
            {"head": "Issa", "member": {"sex": "f"}},
        ],
    }
    assert list(typed.field("/data/household/head").values_in(document)) == ["Moussa", "", "Issa"]
    sex = typed.field("/data/household/member/sex")
    assert list(sex.values_in(document)) == ["m", "f", "f"]
    names = typed.field("/data/household/member/member_name")
    assert list(names.values_in(document)) == [" A ", None, None]
    assert list(names.answers_in(document)) == ["A"]
    assert list(typed.field("/data/respondent/name").values_in(document)) == ["Awa"]
    assert list(typed.field("/data/photo").values_in(document)) == [None]
    assert list(schema.values_at(document, ("respondent", "nothing", "deeper"))) == []
    assert list(schema.values_at("encrypted", ("respondent",))) == []


def test_typed_schema_of_nothing_is_empty():
    empty = schema.FormSchema.of(None)
    assert empty.root == "data" and empty.fields == () and empty.children() == ()
    assert schema.FormSchema.of(empty) is empty


def test_only_the_meta_block_is_meta():
    typed = schema.FormSchema.of(
        {
            "root": "data",
            "fields": [
                {"path": "/data/metadata", "kind": "field", "type": "string"},
                {"path": "/data/meta", "kind": "group", "type": "group"},
                {"path": "/data/meta/instanceID", "parent": "/data/meta"},
            ],
        }
    )
    assert [f.is_meta for f in typed.fields] == [False, True, True]
