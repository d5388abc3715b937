"""Keep the French catalogue in step with the code.

    python scripts/i18n.py update    extract every translatable string, merge into fr's .po
    python scripts/i18n.py compile   compile the .po into the .mo the server loads
    python scripts/i18n.py missing   list strings without a French translation

English is the source language (the msgids); every string must have a French translation:
the test suite fails otherwise (tests/unit/test_translations.py).
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "server"
PO = SOURCE / "translations" / "fr" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
KEYWORDS = {
    "_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "lazy_gettext": None,
    "_l": None,
    "N_": None,
}
METHODS = [("**.py", "python"), ("**/templates/**.html", "jinja2")]


def extract() -> Catalog:
    """Return a catalogue of every translatable string in the server's code and templates."""
    template = Catalog(project="merit-collect")
    for filename, lineno, message, comments, context in extract_from_dir(
        str(SOURCE),
        METHODS,
        keywords=KEYWORDS,
        options_map={"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}},
    ):
        template.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return template


def load() -> Catalog:
    with PO.open("rb") as handle:
        return read_po(handle, locale="fr")


# French typography: one apostrophe (’), and a space before the high signs : ; ? ! (a
# regular, non-breaking or narrow non-breaking one). ``update`` puts the apostrophes right.
_STRAIGHT_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")
_HIGH_SIGN_UNSPACED = re.compile(r"(?<=[^\s\u00a0\u202f(])[:;?!](?=[\s\u00a0\u202f»]|$)")


def typeset(text: str) -> str:
    """Return a French translation with its straight apostrophes made typographic."""
    return _STRAIGHT_APOSTROPHE.sub("\u2019", text)


def typography_faults(catalog: Catalog | None = None) -> list[str]:
    """Return the French translations that break the typography rules above."""
    faults = []
    for message in catalog if catalog is not None else load():
        if not message.id:
            continue  # the catalogue's header
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for text in strings:
            if text and (_STRAIGHT_APOSTROPHE.search(text) or _HIGH_SIGN_UNSPACED.search(text)):
                faults.append(text)
    return faults


def update() -> None:
    catalog = load()
    catalog.update(extract(), no_fuzzy_matching=True)
    for message in catalog:
        if isinstance(message.string, tuple):
            message.string = tuple(typeset(text) for text in message.string)
        elif message.string:
            message.string = typeset(message.string)
    PO.parent.mkdir(parents=True, exist_ok=True)
    with PO.open("wb") as handle:
        write_po(handle, catalog, width=100, omit_header=False, ignore_obsolete=True)
    compile_mo()


def compile_mo() -> None:
    catalog = load()
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    MO.write_bytes(buffer.getvalue())


def missing() -> list[str]:
    catalog = load()
    wanted = extract()
    result = []
    for message in wanted:
        if not message.id:
            continue
        found = catalog.get(message.id, context=message.context)
        if (
            found is None
            or not found.string
            or found.fuzzy
            or (isinstance(found.string, tuple) and not all(found.string))
        ):
            result.append(message.id if isinstance(message.id, str) else message.id[0])
    return result


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else "missing"
    if action == "update":
        update()
    elif action == "compile":
        compile_mo()
    if action in ("update", "missing"):
        gaps = missing()
        for text in gaps:
            print(f"untranslated: {text}")
        sys.exit(1 if gaps and action == "missing" else 0)
