"""Attachment names: one plain name per file, whichever way a client gives it (filenames.py)."""

from __future__ import annotations

import unicodedata

import pytest
from flask import Flask
from flask_babel import Babel

from server import errors
from server.submissions import filenames


@pytest.fixture(autouse=True)
def _babel():
    """Refusals are messages built with gettext: give them an application context."""
    app = Flask(__name__)
    Babel(app, locale_selector=lambda: "en")
    with app.test_request_context():
        yield


@pytest.mark.parametrize(
    "name", ["1715090512345.jpg", "audit.csv", "reçu signé.pdf", "..x.jpg", "a..b", "x"]
)
def test_plain_names_are_taken_as_written(name):
    assert filenames.attachment_name(f" {name} ") == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../x.jpg", "names folders"),
        ("a/b.jpg", "names folders"),
        ("a\\b.jpg", "names folders"),
        ("..", "names a folder"),
        (".", "names a folder"),
        ("ph\x7foto.jpg", "control characters"),
        ("gpj.\u202eexe.jpg", "control characters"),
        ("x" * 256, "longer than 255"),
        ("  ", "empty"),
    ],
)
def test_anything_else_is_refused_with_a_400_saying_why(name, why):
    with pytest.raises(errors.HostileInput) as refused:
        filenames.attachment_name(name)
    assert refused.value.status == 400
    message = refused.value.render_message()
    assert why in message and "\x7f" not in message and "\u202e" not in message


def test_a_parts_file_name_is_its_last_segment_without_controls():
    assert filenames.part_name("../../../../tmp/evil.jpg") == "evil.jpg"
    assert filenames.part_name("C:\\Users\\awa\\photo.jpg") == "photo.jpg"
    assert filenames.part_name("ph\x01oto\x7f.jpg") == "photo.jpg"
    assert filenames.part_name("..") == ".."  # matches nothing a record may name


def test_names_compare_whatever_their_accents_encoding():
    composed = unicodedata.normalize("NFC", "été.jpg")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert filenames.comparable(decomposed) == filenames.comparable(composed) == composed
    assert filenames.part_name(decomposed) == composed
