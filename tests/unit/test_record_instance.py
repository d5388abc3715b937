"""A record must be the form's instance (issue 16): parsing.check_instance, the one rule intake
applies to every record, whether it comes from Collect or from the API."""

from __future__ import annotations

import pytest

from server import errors
from server.submissions import parsing

XFORMS = "http://www.w3.org/2002/xforms"
XHTML = "http://www.w3.org/1999/xhtml"
META = "<meta><instanceID>uuid:1</instanceID></meta>"


def check(xml: str, form_root: str = "data") -> None:
    data = xml.encode()
    parsing.check_instance(parsing.read_submission(data), data, form_root)


def envelope(namespace: str, root: str = "data", extra: str = "") -> str:
    return (
        f'<{root} xmlns="{namespace}" id="f" version="1" encrypted="yes"{extra}>'
        "<base64EncryptedKey>Qk9PTQ==</base64EncryptedKey>"
        '<orx:meta xmlns:orx="http://openrosa.org/xforms"><orx:instanceID>uuid:1</orx:instanceID>'
        "</orx:meta><media><file>a.jpg.enc</file></media>"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
        f"</{root}>"
    )


@pytest.mark.parametrize(
    "xml, form_root",
    [
        # As Collect writes it: no default namespace, jr and orx declared.
        (
            '<data xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms"'
            f' id="f" version="1"><age>3</age>{META}</data>',
            "data",
        ),
        # As ODK Web Forms write it: the XForms namespace.
        (f'<data xmlns="{XFORMS}" id="f"><age>3</age>{META}</data>', "data"),
        # A form whose settings sheet names its instance.
        (f'<enquete id="f"><age>3</age>{META}</enquete>', "enquete"),
        # Collect's encrypted manifest is <data> in its own namespace, whatever the form's root;
        # the specification's namespace is accepted too (openrosa.md §6).
        (envelope("http://www.opendatakit.org/xforms/encrypted"), "enquete"),
        (envelope("http://opendatakit.org/submissions"), "data"),
        # An XHTML namespace declared but not used by any element is harmless.
        (f'<data xmlns:h="{XHTML}" id="f"><age>3</age>{META}</data>', "data"),
    ],
)
def test_the_forms_instance_is_a_record(xml, form_root):
    check(xml, form_root)


@pytest.mark.parametrize(
    "xml, found",
    [
        (f'<html xmlns="{XHTML}" id="f"><script>alert(1)</script>{META}</html>', "<html xmlns="),
        (f'<data xmlns="{XHTML}" id="f"><script>alert(1)</script>{META}</data>', "<data xmlns="),
        (f'<svg xmlns="http://www.w3.org/2000/svg" id="f">{META}</svg>', "<svg xmlns="),
        (f'<html id="f">{META}</html>', "<html>"),
        (f'<enquete id="f">{META}</enquete>', "<enquete>"),  # the form's root is data
        (f'<data xmlns="http://example.org/other" id="f">{META}</data>', "example.org"),
        (envelope(XHTML, root="html"), "<html xmlns="),
        (envelope("http://www.opendatakit.org/xforms/encrypted", root="html"), "<html xmlns="),
    ],
)
def test_a_root_that_is_not_the_forms_is_refused_saying_what_it_found(xml, found):
    with pytest.raises(errors.NotAFormRecord) as refused:
        check(xml)
    assert refused.value.status == 400
    assert found in refused.value.details["reason"]
    assert "<data>" in refused.value.details["reason"]  # what the form's records have


@pytest.mark.parametrize(
    "element",
    [
        f'<h:script xmlns:h="{XHTML}">alert(1)</h:script>',
        f'<g><h:iframe xmlns:h="{XHTML}" src="/"/></g>',
        '<s:svg xmlns:s="http://www.w3.org/2000/svg"><s:script>alert(1)</s:script></s:svg>',
        '<m:math xmlns:m="http://www.w3.org/1998/Math/MathML"/>',
        '<x:stylesheet xmlns:x="http://www.w3.org/1999/XSL/Transform" version="1.0"/>',
    ],
)
def test_an_element_a_browser_would_run_is_refused_anywhere_in_the_record(element):
    with pytest.raises(errors.NotAFormRecord) as refused:
        check(f'<data id="f"><age>3</age>{element}{META}</data>')
    assert "browser" in refused.value.details["reason"]


def test_a_style_sheet_instruction_is_refused():
    with pytest.raises(errors.NotAFormRecord) as refused:
        check(f'<?xml-stylesheet type="text/xsl" href="x.xsl"?><data id="f">{META}</data>')
    assert "xml-stylesheet" in refused.value.details["reason"]
