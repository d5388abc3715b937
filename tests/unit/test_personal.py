"""What is personal in a form, and what a reader without the right sees of it."""

from __future__ import annotations

from server.personal import Disclosure, PersonalFields, Pseudonymiser, personal_fields


def field(path: str, type_: str = "string", **extra) -> dict:
    return {"path": path, "name": path.rsplit("/", 1)[-1], "kind": "field", "type": type_, **extra}


def schema(*fields: dict, instance_name: str | None = None) -> dict:
    return {"root": "data", "fields": list(fields), "instanceName": instance_name}


def test_pseudonyms_are_keyed_by_project():
    one, two = Pseudonymiser("secret", 1), Pseudonymiser("secret", 2)
    assert one("Awa") == Pseudonymiser("secret", 1)("Awa")
    assert one("Awa") != two("Awa") and one("Awa") != one("Awa ")
    assert one("Awa").startswith("pid_") and len(one("Awa")) == 24
    assert Pseudonymiser("other", 1)("Awa") != one("Awa")
    assert one("") == "" and one(None) == ""


def test_marked_fields_and_the_calculations_that_read_them_are_personal():
    found = personal_fields(
        [
            schema(
                field("/data/name", pii=True),
                field("/data/grp/surname", pii=True),
                field("/data/age", "int"),
                field("/data/full", calculate="concat( /data/name , ' ', /data/grp/surname)"),
                field("/data/initials", calculate="substr(/data/full, 0, 1)"),  # two steps
                field("/data/grp/sibling", calculate="../surname"),  # relative
                field("/data/older", calculate="/data/age + 1"),
                field("/data/photo", "binary", pii=True),
            )
        ]
    )
    assert found.paths == {
        "/data/name",
        "/data/grp/surname",
        "/data/full",
        "/data/initials",
        "/data/grp/sibling",
        "/data/photo",
    }
    assert found.file_paths() == ["/data/photo"]


def test_a_field_marked_in_any_version_stays_personal():
    old = schema(field("/data/name", pii=True))
    new = schema(field("/data/name"))  # the mark was dropped later
    assert personal_fields([old, new]).is_personal("/data/name")


def test_instance_name_is_personal_when_it_reads_a_personal_answer():
    name = field("/data/name", pii=True)
    code = field("/data/code")
    read_name = schema(name, code, instance_name="concat(/data/name, '-', /data/code)")
    read_code = schema(name, code, instance_name="concat('P-', /data/code)")
    unknown = schema(name, code, instance_name="instance('cases')/root/item[1]/label")
    assert personal_fields([read_name]).instance_name
    assert not personal_fields([read_code]).instance_name
    assert personal_fields([unknown]).instance_name  # cannot tell what it reads
    nothing_personal = schema(code, instance_name="instance('x')/root/item/label")
    assert not personal_fields([nothing_personal]).instance_name


def test_the_client_audit_log_is_a_personal_file_when_the_form_has_personal_answers():
    audit = field("/data/meta/audit", "binary", audit=True)
    assert personal_fields([schema(audit, field("/data/n", pii=True))]).file_paths() == [
        "/data/meta/audit"
    ]
    assert personal_fields([schema(audit, field("/data/n"))]).file_paths() == []


def hidden_view(fields: PersonalFields) -> Disclosure:
    return Disclosure(fields, clear=False, pseudonymise=Pseudonymiser("k", 1))


def test_documents_and_xml_hide_personal_answers_in_repeats_too():
    fields = personal_fields(
        [
            schema(
                field("/data/name", pii=True),
                field("/data/members/member_name", pii=True),
                field("/data/age", "int", pii=True),
                field("/data/photo", "binary", pii=True),
                instance_name="concat(/data/name)",
            )
        ]
    )
    view = hidden_view(fields)
    document = {
        "name": "Awa",
        "age": "034",
        "photo": "face.jpg",
        "members": [{"member_name": "Ali"}, {"member_name": "Oumar"}],
        "meta": {"instanceName": "Awa"},
    }
    shown = view.document(document, instance_id="uuid:1", channel="test")
    pseudonym = Pseudonymiser("k", 1)
    assert shown["name"] == pseudonym("Awa") == shown["meta"]["instanceName"]
    assert shown["age"] == pseudonym("34")  # as the CSV export writes the number
    assert shown["photo"] == ""  # a personal file is not named
    assert [m["member_name"] for m in shown["members"]] == [pseudonym("Ali"), pseudonym("Oumar")]
    assert document["name"] == "Awa", "the stored document is not changed"
    xml = (
        '<data id="f"><name>Awa</name><age>034</age><photo>face.jpg</photo>'
        "<members><member_name>Ali</member_name></members>"
        "<meta><instanceName>Awa</instanceName></meta></data>"
    )
    redacted = view.xml(xml, instance_id="uuid:1", channel="test")
    assert "Awa" not in redacted and "Ali" not in redacted and "face.jpg" not in redacted
    assert pseudonym("Ali") in redacted
    assert view.instance_name("Awa", instance_id="uuid:1", channel="test") == pseudonym("Awa")
    assert view.personal_files(document) == {"face.jpg"}
    assert not view.instance_name_searchable


def test_a_reader_with_the_right_sees_everything_and_nothing_changes():
    fields = personal_fields([schema(field("/data/name", pii=True))])
    view = Disclosure(fields, clear=True, pseudonymise=Pseudonymiser("k", 1))
    document = {"name": "Awa"}
    assert view.document(document, instance_id="uuid:1", channel="test") is document
    assert view.xml("<data><name>Awa</name></data>", instance_id="u", channel="t").count("Awa")
