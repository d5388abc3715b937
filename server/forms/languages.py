"""A form's languages against the two the server speaks (fr, en).

A form's labels are keyed by the XLSForm's language names (``Français (fr)``, ``English (en)``,
``French``...) or ``default`` for one-language forms. A form language is French or English by
its code in brackets (``fr``, ``fra``, ``fre``; ``en``, ``eng``), else by its first word
(``Français``, ``French``, ``English``...). The console picks the form language matching the
page's; exports translate their own words (a split geopoint's suffixes) into the language of
the labels they show.
"""

from __future__ import annotations

import re

SPOKEN = ("fr", "en")
_CODE = re.compile(r"\(([A-Za-z]{2,3})(?:[-_][A-Za-z]+)?\)\s*$")
_CODES = {"fr": frozenset({"fr", "fra", "fre"}), "en": frozenset({"en", "eng"})}
_WORDS = {
    "fr": frozenset({"français", "francais", "french"}),
    "en": frozenset({"english", "anglais"}),
}


def matches(form_language: str, ui_language: str) -> bool:
    """Tell whether a form's language name is the console language ``fr`` or ``en``."""
    codes = _CODES.get(ui_language, frozenset())
    code = _CODE.search(form_language)
    if code:
        return code.group(1).lower() in codes
    words = form_language.strip().lower().split()
    return bool(words) and (words[0] in codes or words[0] in _WORDS.get(ui_language, ()))


def console_language(form_language: str) -> str | None:
    """Return fr or en for a form language the server speaks, else None (``Bambara (bm)``)."""
    return next((spoken for spoken in SPOKEN if matches(form_language, spoken)), None)
