"""Labels of a form in the console's language.

The console speaks fr or en; the form's language that matches the page's
(:func:`server.forms.languages.matches`: by its code in brackets, then by its name) is
chosen, then the form's default language, then whatever the label has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from server.forms.languages import matches
from server.forms.schema import FormSchema

__all__ = ["for_schema", "form_language", "matches", "pick"]


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
