"""Safe XML parsing of records: the bounds on depth and size, and the document built."""

from __future__ import annotations

import pytest

from server import errors
from server.submissions import parsing


def nested(depth: int) -> bytes:
    """A record whose deepest element is at ``depth`` (the root is at 1)."""
    return b'<data id="f">' + b"<g>" * (depth - 1) + b"x" + b"</g>" * (depth - 1) + b"</data>"


def test_a_record_as_deep_as_the_limit_is_read():
    root = parsing.parse_xml(nested(parsing.MAX_DEPTH))
    assert root.get("id") == "f"


def test_one_level_deeper_than_the_limit_is_refused_as_hostile():
    with pytest.raises(errors.HostileInput) as refused:
        parsing.parse_xml(nested(parsing.MAX_DEPTH + 1))
    assert str(parsing.MAX_DEPTH) in str(refused.value.details)


def test_more_elements_than_the_limit_are_refused_as_hostile():
    many = b'<data id="f">' + b"<q/>" * parsing.MAX_ELEMENTS + b"</data>"  # the root is one more
    with pytest.raises(errors.HostileInput):
        parsing.parse_xml(many)
    at_limit = b'<data id="f">' + b"<q/>" * (parsing.MAX_ELEMENTS - 1) + b"</data>"
    assert len(parsing.parse_xml(at_limit)) == parsing.MAX_ELEMENTS - 1


def test_the_document_mirrors_the_xml_with_repeats_as_lists():
    root = parsing.parse_xml(
        b'<data id="f" xmlns:orx="http://openrosa.org/xforms"><name>Awa</name><empty/>'
        b"<hh><m>1</m></hh><hh><m>2</m></hh>"
        b"<orx:meta><orx:instanceID>uuid:1</orx:instanceID></orx:meta></data>"
    )
    document = parsing.build_document(root, frozenset({"/data/hh", "/data/none"}))
    assert document == {
        "name": "Awa",
        "empty": None,
        "hh": [{"m": "1"}, {"m": "2"}],
        "meta": {"instanceID": "uuid:1"},
        "none": [],
    }


def test_a_record_made_an_edit_gets_a_new_instance_id_and_names_the_one_it_replaces():
    sent = (
        b'<?xml version="1.0"?><data xmlns:orx="http://openrosa.org/xforms" id="f" '
        b'version="3"><age>35</age><orx:meta><orx:instanceID>uuid:a</orx:instanceID>'
        b"</orx:meta></data>"
    )
    edited = parsing.read_submission(
        parsing.as_edit(sent, instance_id="uuid:b", deprecated_id="uuid:c")
    )
    assert (edited.form_id, edited.version) == ("f", "3")
    assert (edited.instance_id, edited.deprecated_id) == ("uuid:b", "uuid:c")
    assert b"<orx:deprecatedID>uuid:c</orx:deprecatedID>" in parsing.as_edit(
        sent, instance_id="uuid:b", deprecated_id="uuid:c"
    )
    # An earlier deprecatedID is replaced; an instanceID at the root (no meta) moves to meta.
    twice = parsing.as_edit(
        parsing.as_edit(sent, instance_id="uuid:b", deprecated_id="uuid:c"),
        instance_id="uuid:d",
        deprecated_id="uuid:b",
    )
    assert twice.count(b"deprecatedID>uuid:b<") == 1 and b"uuid:c" not in twice
    bare = b'<data id="f"><instanceID>uuid:a</instanceID><age>1</age></data>'
    moved = parsing.read_submission(
        parsing.as_edit(bare, instance_id="uuid:n", deprecated_id="uuid:a")
    )
    assert (moved.instance_id, moved.deprecated_id) == ("uuid:n", "uuid:a")
    assert b"uuid:a</instanceID>" not in parsing.as_edit(bare, instance_id="n", deprecated_id="o")
