"""The public key in an XForm (openrosa.md §6, §7) and the encrypted version suffix."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from server.crypto import inject_public_key, public_key_of, version_suffix
from server.forms import compiler, schema, xform
from tests.support import collect_crypto
from tests.support.openrosa import XFORM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def public():
    return collect_crypto.generate_key_pair()[1]


def menage(version: str = "2024050701") -> str:
    return XFORM.format(form_id="menage", version=version)


def test_a_form_without_submission_gets_one_at_the_end_of_its_model(public):
    original = menage()
    injected = inject_public_key(original, public)
    assert public_key_of(injected) == public
    assert schema.extract(injected)["publicKey"] == public
    # Only an insertion just before </model>: the text before and after is untouched.
    end = original.index("</model>")
    assert injected.startswith(original[:end])
    assert injected.endswith(original[end:])
    inserted = injected[end : len(injected) - len(original) + end]
    assert inserted == f'  <submission method="post" base64RsaPublicKey="{public}"/>\n    '


def test_an_existing_submission_element_keeps_everything_and_gains_the_key(public):
    original = menage().replace(
        "</model>",
        '  <submission action="https://example.org/submission" method="post" '
        'orx:auto-send="true"/>\n    </model>',
    )
    injected = inject_public_key(original, public)
    submission = xform.model(xform.parse(injected.encode())).find("xf:submission", xform.NS)
    assert submission.get("action") == "https://example.org/submission"
    assert submission.get("{http://openrosa.org/xforms}auto-send") == "true"
    assert submission.get("base64RsaPublicKey") == public
    assert injected.replace(f' base64RsaPublicKey="{public}"', "") == original


def test_a_key_already_there_is_replaced(public):
    other = collect_crypto.generate_key_pair()[1]
    once = inject_public_key(menage(), other)
    twice = inject_public_key(once, public)
    assert public_key_of(twice) == public
    assert twice.replace(public, other) == once


def test_comments_cdata_and_instance_elements_named_submission_are_not_taken_for_it(public):
    original = (
        menage()
        .replace("<name/>", "<name/><submission/>")
        .replace(
            "<h:title>",
            "<!-- <submission base64RsaPublicKey='x'/> --><h:title>",
        )
        .replace("<label>Nom</label>", "<label><![CDATA[<submission> > 3]]></label>")
    )
    injected = inject_public_key(original, public)
    model = xform.model(xform.parse(injected.encode()))
    assert model.find("xf:submission", xform.NS).get("base64RsaPublicKey") == public
    assert "<!-- <submission base64RsaPublicKey='x'/> -->" in injected
    assert "<name/><submission/>" in injected


def test_an_attribute_value_holding_a_closing_bracket_does_not_confuse_it(public):
    original = menage().replace(
        '<bind nodeset="/data/age" type="int"/>',
        '<bind nodeset="/data/age" type="int" constraint=". > 0 and . < 120"/>'.replace(
            "<", "&lt;"
        ),
    )
    original = original.replace("&lt;bind", "<bind")
    injected = inject_public_key(original, public)
    assert public_key_of(injected) == public
    assert 'constraint=". > 0 and . &lt; 120"' in injected


def test_a_prefixed_model_gets_a_prefixed_submission(public):
    original = (
        '<?xml version="1.0"?>\n<h:html xmlns:h="http://www.w3.org/1999/xhtml" '
        'xmlns:xf="http://www.w3.org/2002/xforms"><h:head><h:title>T</h:title>'
        '<xf:model><xf:instance><data id="t" version="1"><q/><meta><instanceID/></meta></data>'
        '</xf:instance><xf:bind nodeset="/data/q" type="string"/></xf:model></h:head>'
        "<h:body/></h:html>"
    )
    injected = inject_public_key(original, public)
    assert f'<xf:submission method="post" base64RsaPublicKey="{public}"/></xf:model>' in injected
    assert public_key_of(injected) == public


def test_a_form_compiled_from_the_programmes_xlsform_takes_the_key(public):
    source = ROOT / "xlsforms" / "youth_survey.xlsx"
    compiled = compiler.compile_upload(source.read_bytes(), filename=source.name)
    injected = inject_public_key(compiled.xml, public)
    assert public_key_of(injected) == public
    # pyxform writes the model on one line: the element goes in just before </model>.
    element = f'<submission method="post" base64RsaPublicKey="{public}"/>'
    assert injected == compiled.xml.replace("</model>", element + "</model>", 1)
    assert schema.extract(injected)["fields"] == schema.extract(compiled.xml)["fields"]


def test_a_key_that_is_not_an_rsa_public_key_is_refused():
    with pytest.raises(ValueError):
        inject_public_key(menage(), "bm90IGEga2V5")
    with pytest.raises(ValueError):
        inject_public_key(menage(), "not base64 at all!")


def test_a_doctype_is_refused_before_anything_is_done(public):
    hostile = (
        '<?xml version="1.0"?><!DOCTYPE h:html [<!ENTITY x "y">]>' + menage().split("?>", 1)[1]
    )
    with pytest.raises(xform.XFormError):
        inject_public_key(hostile, public)


def test_a_form_without_a_key_has_none():
    assert public_key_of(menage()) is None


def test_the_version_suffix_encodes_the_millisecond_in_url_safe_base64():
    moment = dt.datetime(2024, 6, 12, 10, 30, 0, 123000, tzinfo=dt.UTC)
    suffix = version_suffix(moment)
    assert re.fullmatch(r"\[encrypted:[A-Za-z0-9_-]{8}\]", suffix)
    assert suffix == version_suffix(moment)
    assert suffix != version_suffix(moment + dt.timedelta(milliseconds=1))
    assert "/" not in suffix and "+" not in suffix
