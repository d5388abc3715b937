"""Attachment names: the one rule for every file name a client gives a record.

Names reach the server three ways: a record's XML names its files (the answers of its image,
audio and file questions; an encrypted record's manifest), an upload's parts carry file names,
and the API names a file in its URL. Each is read through this module, and names are compared
in one form, :func:`comparable`, so a name the XML writes decomposed (NFD: ``e`` + U+0301, as
macOS and some keyboards write accents) matches the same name written composed (NFC) in a part.

What ODK Collect sends (openrosa.md §4.2): "file name is both part name and filename", and the
XML's value is that same name: the name of a file in the instance's folder, which Collect gives
media it captures (``1715090512345.jpg``) and keeps for files chosen on the device. A file in a
folder has one plain name: never a path, never ``.`` or ``..``, no control characters. So:

* a name in the record's XML that is not one plain name (``../../x``, ``a/b.jpg``, ``a\\b``,
  ``..``, control or direction-override characters, more than 255 characters) cannot come from
  Collect: the record is refused whole with a 400 (:func:`attachment_name`), before anything is
  stored, rather than cleaned into a name the tablet never wrote;
* a part's file name is a transport detail that may carry a path (RFC 7578 §4.2: the receiver
  uses only the last segment), so it is reduced to its last segment (:func:`part_name`) and
  then must equal a name the XML gives, or the part is ignored as any extra file is.

Names are stored as the record's XML writes them (its signature covers them when encrypted,
openrosa.md §6); archives make their own entries from them (server.exports.streams).
"""

from __future__ import annotations

import unicodedata

from flask_babel import gettext as _

from server import errors

MAX_LENGTH = 255  # the column holding a file name (submission_attachments.name)


def comparable(name: str) -> str:
    """Return the form in which two names are compared: NFC, without surrounding blanks."""
    return unicodedata.normalize("NFC", name).strip()


def _control(ch: str) -> bool:
    # Unicode's "C" categories: control, format (U+202E turns "gpj.exe" into "exe.jpg" on
    # screen), surrogate, private use and unassigned characters.
    return unicodedata.category(ch)[0] == "C"


def attachment_name(name: str) -> str:
    """Return a file name a record (or the API's URL) gives, or raise 400 when it is no name.

    The name is returned as written, without surrounding blanks; compare it through
    :func:`comparable`.
    """
    name = name.strip()
    problem = None
    if not name:
        problem = _("it is empty")
    elif "/" in name or "\\" in name:
        problem = _("it names folders")
    elif name in (".", ".."):
        problem = _("it names a folder")
    elif any(_control(ch) for ch in name):
        problem = _("it holds control characters")
    elif len(name) > MAX_LENGTH:
        problem = _("it is longer than %(limit)s characters", limit=MAX_LENGTH)
    if problem is None:
        return name
    shown = "".join(f"\\u{ord(ch):04x}" if _control(ch) else ch for ch in name[:MAX_LENGTH])
    raise errors.HostileInput(
        reason=_(
            "the file name “%(name)s” is not one plain file name: %(problem)s",
            name=shown,
            problem=problem,
        ),
        file=shown,
    )


def part_name(filename: str) -> str:
    """Return the name an upload's file part stands for: its last segment, without controls."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return comparable("".join(ch for ch in name if not _control(ch)))[:MAX_LENGTH]
