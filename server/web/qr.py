"""QR codes that configure ODK Collect, drawn on the server as SVG (no outside service)."""

from __future__ import annotations

import segno

# Medium error correction: the code still scans from a slightly worn printout or a dim screen.
ERROR = "m"
# A viewBox instead of a size, so that the page's stylesheet sizes it; a white quiet zone so
# that it scans on any background.
SVG_OPTIONS = {
    "scale": 1,
    "border": 4,
    "svgclass": "qr",
    "lineclass": None,
    "omitsize": True,
    "dark": "#000",
    "light": "#fff",
}


def svg(payload: str) -> str:
    """Return the QR code of ``payload`` as an inline SVG element."""
    return segno.make(payload, error=ERROR, micro=False).svg_inline(**SVG_OPTIONS)
