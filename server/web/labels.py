"""Labels of a form in the console's language.

A form's labels are keyed by the XLSForm's language names (``Français (fr)``, ``English (en)``,
``French``...) or ``default`` for one-language forms; the console speaks fr or en. The form's
language that matches the page's is chosen by its code in brackets, then by its name, then the
form's default language, then whatever the label has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from server.forms.schema import FormSchema

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


def form_language(languages: Iterable[str], ui_language: str, default: str | None) -> str | None:
    """Return the form language to show for the console language (None: the form has none)."""
    languages = list(languages)
    for language in languages:
        if matches(language, ui_language):
            return language
    if default in languages:
        return default
    return languages[0] if languages else None


def pick(labels: Mapping[str, str] | None, language: str | None, fallback: str = "") -> str:
    """Return the label in ``language``, else the default one, else any, else ``fallback``."""
    if not labels:
        return fallback
    if language and labels.get(language):
        return labels[language]
    if labels.get("default"):
        return labels["default"]
    return next((text for text in labels.values() if text), fallback)


def for_schema(schema: FormSchema | None, ui_language: str) -> str | None:
    """Return the language of a field schema to show for the console language."""
    if schema is None:
        return None
    return form_language(schema.languages, ui_language, schema.default_language)
