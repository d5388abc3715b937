"""The settings ODK Collect imports from a QR code (openrosa.md §5, "Settings QR code").

The QR code holds base64 (no line breaks) of zlib-compressed UTF-8 JSON with ``general``,
``admin`` and ``project`` objects. Scanning it configures a tablet in one step: server address
with the app user's token, how forms update, when records are sent, photo size, and an
optional admin password that stops enumerators from changing any of it.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any

FORM_UPDATE_MODES = ("manual", "previously_downloaded", "match_exactly")
AUTOSEND = ("off", "wifi_only", "cellular_only", "wifi_and_cellular")
IMAGE_SIZES = ("original_image_size", "small", "very_small", "medium", "large")
UPDATE_CHECKS = ("every_fifteen_minutes", "every_one_hour", "every_six_hours", "every_24_hours")
LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class CollectOptions:
    """What a programme fixes on its tablets. Defaults suit enumerators on weak networks."""

    form_update_mode: str = "match_exactly"
    periodic_form_updates_check: str = "every_one_hour"
    autosend: str = "wifi_and_cellular"
    image_size: str = "small"
    app_language: str = "fr"
    admin_password: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first setting whose value Collect would not accept."""
        for name, allowed in (
            ("form_update_mode", FORM_UPDATE_MODES),
            ("autosend", AUTOSEND),
            ("image_size", IMAGE_SIZES),
            ("periodic_form_updates_check", UPDATE_CHECKS),
            ("app_language", LANGUAGES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")


def settings(
    server_url: str, project_name: str, device_name: str, options: CollectOptions = CollectOptions()
) -> dict[str, Any]:
    """Return the settings object for one app user's tablet."""
    options.check()
    admin: dict[str, Any] = {"change_server": False}
    if options.admin_password:
        admin["admin_pw"] = options.admin_password
    label = f"{project_name} – {device_name}"
    return {
        "general": {
            "server_url": server_url,
            "username": "",
            "password": "",
            "form_update_mode": options.form_update_mode,
            "periodic_form_updates_check": options.periodic_form_updates_check,
            "autosend": options.autosend,
            "image_size": options.image_size,
            "app_language": options.app_language,
            "delete_send": False,
        },
        "admin": admin,
        "project": {"name": label, "icon": (project_name[:1] or "M").upper(), "color": "#3e9fcc"},
    }


def encode(settings_object: dict[str, Any]) -> str:
    """Return the QR code's text: base64 of zlib-compressed JSON, no line breaks."""
    raw = json.dumps(settings_object, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(zlib.compress(raw.encode("utf-8"))).decode("ascii")


def decode(payload: str) -> dict[str, Any]:
    """Read a QR code's text back into settings (tests and support staff use it)."""
    return json.loads(zlib.decompress(base64.b64decode(payload)).decode("utf-8"))
