"""Everything a coordinator or enumerator reads exists in French and English."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from babel.messages.mofile import read_mo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import i18n


def test_every_string_has_a_french_translation():
    missing = i18n.missing()
    assert not missing, (
        "untranslated strings (run `python scripts/i18n.py update`, translate them in "
        f"{i18n.PO.relative_to(i18n.ROOT)}, then `python scripts/i18n.py compile`): {missing}"
    )


def test_compiled_catalogue_matches_the_po_file():
    compiled = read_mo(io.BytesIO(i18n.MO.read_bytes()))
    source = i18n.load()

    def key(value):
        # Plural entries carry tuples (or lists, from a compiled catalogue).
        return tuple(value) if isinstance(value, list | tuple) else value

    expected = {
        key(m.id): key(m.string)
        for m in source
        if m.id and m.string and any(m.string) and not m.fuzzy
    }
    actual = {key(m.id): key(m.string) for m in compiled if m.id}
    assert actual == expected, "the .mo is stale: run `python scripts/i18n.py compile`"


def test_placeholders_survive_translation():
    for message in i18n.load():
        if not message.id or not isinstance(message.id, str) or not message.string:
            continue  # untranslated entries are reported by the test above
        for token in ("%(", ")s"):
            assert message.id.count(token) == message.string.count(token), message.id


def test_french_typography_one_apostrophe_and_a_space_before_high_signs():
    faults = i18n.typography_faults()
    assert not faults, (
        "French translations with a straight apostrophe or no space before : ; ? ! "
        f"(`python scripts/i18n.py update` fixes the apostrophes): {faults}"
    )


def test_templates_put_no_colon_after_a_translated_label():
    # "{{ _('Label') }}:" reads «Libellé:» in French: the colon belongs inside the msgid.
    templates = Path(i18n.SOURCE, "web", "templates").rglob("*.html")
    glued = [
        f"{path.name}: {match.group(0)}"
        for path in templates
        for match in re.finditer(r"\}\}\s*[:;?!]", path.read_text(encoding="utf-8"))
    ]
    assert not glued, glued
