"""The settings table: defaults, parsing, and the README documenting every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_are_the_embedded_ones(tmp_path):
    values = config.load({"MERIT_DATA_DIR": str(tmp_path)})
    assert values["DATABASE_URL"] == f"sqlite:///{tmp_path / 'merit.db'}"
    assert values["STORAGE_URL"] == str(tmp_path / "blobs")
    assert values["PORT"] == 8080
    assert values["HOST"] == "127.0.0.1"
    assert values["DEFAULT_LANGUAGE"] == "fr"
    assert values["MAX_UPLOAD_BYTES"] == 100_000_000


def test_generated_secret_is_kept_and_private(tmp_path):
    first = config.load({"MERIT_DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    second = config.load({"MERIT_DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    assert first == second and len(first) > 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_environment_values_are_parsed(tmp_path):
    values = config.load(
        {
            "MERIT_DATA_DIR": str(tmp_path),
            "MERIT_PORT": "9090",
            "MERIT_LOG_JSON": "no",
            "MERIT_PUBLIC_URL": "https://collect.example.org/",
            "MERIT_DEFAULT_LANGUAGE": "en",
        }
    )
    assert values["PORT"] == 9090
    assert values["LOG_JSON"] is False
    assert values["PUBLIC_URL"] == "https://collect.example.org"
    assert values["DEFAULT_LANGUAGE"] == "en"


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("MERIT_PORT", "eighty"),
        ("MERIT_LOG_JSON", "maybe"),
        ("MERIT_DEFAULT_LANGUAGE", "de"),
        ("MERIT_UPLOAD_MIN_BYTES_PER_SECOND", "0"),
        ("MERIT_ANONYMOUS_BODIES_PER_CLIENT", "0"),
    ],
)
def test_bad_values_are_named_in_the_error(tmp_path, env, value):
    with pytest.raises(config.ConfigError, match=env):
        config.load({"MERIT_DATA_DIR": str(tmp_path), env: value})


def test_anonymous_bodies_default_to_a_quarter_of_the_threads(tmp_path):
    assert config.load({"MERIT_DATA_DIR": str(tmp_path)})["ANONYMOUS_BODIES"] == 8
    few = config.load({"MERIT_DATA_DIR": str(tmp_path), "MERIT_THREADS": "2"})
    assert few["ANONYMOUS_BODIES"] == 1
    chosen = config.load({"MERIT_DATA_DIR": str(tmp_path), "MERIT_ANONYMOUS_BODIES": "5"})
    assert chosen["ANONYMOUS_BODIES"] == 5


def test_readme_shows_the_settings_table_as_the_code_defines_it():
    text = README.read_text(encoding="utf-8")
    missing = [s.env for s in config.SETTINGS if f"`{s.env}`" not in text]
    assert not missing, f"settings missing from the README's table: {missing}"
    assert config.markdown_table() in text, (
        "the README's settings table differs from server/config.py; paste the output of "
        "`.venv/bin/python -c 'from server.config import markdown_table; print(markdown_table())'`"
    )
