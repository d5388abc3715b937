"""The console's pure parts: labels in the page's language, charts, the map, the form's
structure and a record's answers, QR codes, the Content-Security-Policy's tile origin."""

from __future__ import annotations

import datetime as dt

import segno

from server.openrosa import settings as collect
from server.web import charts, labels, qr, security, structure

BILINGUAL = ["Français (fr)", "English (en)"]


def test_the_forms_language_is_found_for_the_pages_language():
    assert labels.form_language(BILINGUAL, "fr", None) == "Français (fr)"
    assert labels.form_language(BILINGUAL, "en", None) == "English (en)"
    assert labels.form_language(["French", "english"], "en", "French") == "english"
    assert labels.form_language(["Bambara (bm)", "Français (fr)"], "en", "Bambara (bm)") == (
        "Bambara (bm)"
    )
    assert labels.form_language(["Bambara (bm)", "Peul (ff)"], "en", None) == "Bambara (bm)"
    assert labels.form_language([], "fr", None) is None
    assert labels.matches("Français (fra)", "fr") and not labels.matches("Français (fr)", "en")


def test_a_label_falls_back_to_the_default_then_any_then_the_name():
    both = {"Français (fr)": "Nom", "English (en)": "Name"}
    assert labels.pick(both, "English (en)") == "Name"
    assert labels.pick({"default": "Nom"}, "English (en)") == "Nom"
    assert labels.pick({"English (en)": "Name"}, "Français (fr)") == "Name"
    assert labels.pick({}, "Français (fr)", "name") == "name"


def test_the_time_chart_fills_empty_days_and_goes_weekly_beyond_three_months():
    day = dt.date(2024, 5, 1)
    chart = charts.time_chart([(day, 2), (day + dt.timedelta(days=3), 4)])
    assert [c.count for c in chart.columns] == [2, 0, 0, 4]
    assert chart.maximum == 4 and not chart.weekly
    tallest = max(chart.columns, key=lambda c: c.height)
    assert tallest.height == chart.height and tallest.y == 0
    assert chart.width == charts.MIN_SLOTS * 10  # a short period keeps narrow columns
    long = charts.time_chart([(day, 1), (day + dt.timedelta(days=200), 1)])
    assert long.weekly and sum(c.count for c in long.columns) == 2
    assert all(c.start.weekday() == 0 for c in long.columns)
    assert charts.time_chart([]).columns == []


def test_bars_are_relative_to_the_largest_and_share_the_total():
    bars = charts.bars([("a", 5), ("b", 10), ("c", 0)])
    assert [b.length for b in bars] == [50.0, 100.0, 0.0]
    assert [b.share for b in bars] == [33.3, 66.7, 0.0]
    assert charts.bars([("a", 1)], total=4)[0].share == 25.0


def test_the_map_fits_the_points_and_adds_tiles_only_when_configured():
    points = [(13.45, -6.26, "uuid:a", "A"), (14.35, -3.61, "uuid:b", "B")]
    plain = charts.point_map(points)
    assert plain.tiles == []
    for point in plain.points:
        assert 0 < point.x < plain.width and 0 < point.y < plain.height
    # West is left, north is up.
    west, east = plain.points
    assert west.x < east.x and west.y > east.y
    tiled = charts.point_map(points, tile_url="https://{s}.tiles.example.org/{z}/{x}/{y}.png")
    assert tiled.tiles and all(t.url.startswith("https://") for t in tiled.tiles)
    assert f"/{tiled.zoom}/" in tiled.tiles[0].url
    single = charts.point_map([(12.6, -8.0, "uuid:c", None)])
    assert single.zoom == charts.MAX_ZOOM
    assert (single.points[0].x, single.points[0].y) == (single.width / 2, single.height / 2)
    assert charts.point_map([], tile_url="https://t.example.org/{z}/{x}/{y}.png").tiles == []


def test_tile_origins_for_the_content_security_policy():
    assert security.tile_origin("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png") == (
        "https://*.tile.openstreetmap.org"
    )
    assert security.tile_origin("http://tiles.local:8080/{z}/{x}/{y}.png") == (
        "http://tiles.local:8080"
    )
    assert security.tile_origin("javascript:alert(1)") is None
    assert security.tile_origin("") is None


SCHEMA = {
    "root": "data",
    "languages": BILINGUAL,
    "choiceLists": {
        "sex": [
            {"name": "f", "labels": {"Français (fr)": "Féminin", "English (en)": "Female"}},
            {"name": "m", "labels": {"Français (fr)": "Masculin", "English (en)": "Male"}},
        ]
    },
    "fields": [
        {
            "path": "/data/grp",
            "name": "grp",
            "kind": "group",
            "type": "group",
            "labels": {"Français (fr)": "Groupe", "English (en)": "Group"},
        },
        {
            "path": "/data/grp/age",
            "name": "age",
            "kind": "field",
            "type": "int",
            "control": "input",
            "parent": "/data/grp",
            "required": True,
            "labels": {"Français (fr)": "Âge", "English (en)": "Age"},
        },
        {
            "path": "/data/people",
            "name": "people",
            "kind": "repeat",
            "type": "repeat",
            "labels": {"Français (fr)": "Personnes"},
        },
        {
            "path": "/data/people/sex",
            "name": "sex",
            "kind": "field",
            "type": "select_one",
            "control": "select1",
            "choices": "sex",
            "parent": "/data/people",
            "labels": {"Français (fr)": "Sexe", "English (en)": "Sex"},
        },
        {
            "path": "/data/people/photo",
            "name": "photo",
            "kind": "field",
            "type": "binary",
            "control": "upload",
            "mediatype": "image/*",
            "parent": "/data/people",
            "labels": {},
        },
        {
            "path": "/data/where",
            "name": "where",
            "kind": "field",
            "type": "geopoint",
            "control": "input",
            "labels": {},
        },
        {"path": "/data/meta", "name": "meta", "kind": "group", "type": "group", "labels": {}},
        {
            "path": "/data/meta/instanceID",
            "name": "instanceID",
            "kind": "field",
            "type": "string",
            "parent": "/data/meta",
            "labels": {},
        },
    ],
}


def test_the_structure_lists_questions_in_each_language_without_meta():
    languages, rows = structure.structure(SCHEMA)
    assert languages == BILINGUAL
    assert [(r.name, r.depth, r.kind) for r in rows] == [
        ("grp", 0, "group"),
        ("age", 1, "field"),
        ("people", 0, "repeat"),
        ("sex", 1, "field"),
        ("photo", 1, "field"),
        ("where", 0, "field"),
    ]
    age = rows[1]
    assert age.labels == ["Âge", "Age"] and age.required
    assert rows[3].choices == [("f", ["Féminin", "Female"]), ("m", ["Masculin", "Male"])]
    assert rows[4].type == "photo" and rows[5].type == "location"


def test_a_records_answers_are_labelled_and_walk_through_repeats():
    document = {
        "grp": {"age": "34"},
        "people": [{"sex": "f", "photo": "a.jpg"}, {"sex": "m", "photo": None}],
        "where": "13.45 -6.26 290 4.5",
        "meta": {"instanceID": "uuid:x"},
    }
    answers = structure.answers(
        SCHEMA, document, "English (en)", lambda name: f"/media/{name}", {"a.jpg"}
    )
    shown = [(a.depth, a.kind, a.label, a.value) for a in answers]
    assert shown == [
        (0, "group", "Group", ""),
        (1, "field", "Age", "34"),
        (0, "repeat", "Personnes #1", ""),
        (1, "field", "Sex", "Female"),
        (1, "field", "photo", "a.jpg"),
        (0, "repeat", "Personnes #2", ""),
        (1, "field", "Sex", "Male"),
        (1, "field", "photo", ""),
        (0, "field", "where", "13.45, -6.26 (± 4.5 m)"),
    ]
    photo = answers[4].media
    assert photo == {"name": "a.jpg", "kind": "image", "url": "/media/a.jpg", "present": True}
    assert structure.answers(SCHEMA, None, None, str, set())[0].label == "Groupe"


def test_the_qr_code_is_segnos_rendering_of_the_settings():
    payload = collect.encode(
        collect.settings("https://collect.example.org/v1/key/T/projects/1", "Ségou", "Tab 1")
    )
    svg = qr.svg(payload)
    assert svg.startswith('<svg viewBox="0 0 ') and 'class="qr"' in svg
    assert svg == segno.make(payload, error="m", micro=False).svg_inline(
        scale=1, border=4, svgclass="qr", lineclass=None, omitsize=True, dark="#000", light="#fff"
    )
    assert "style=" not in svg  # the Content-Security-Policy forbids inline styles


def test_references_in_labels_show_the_records_answers_innermost_first():
    def field(path: str, label: str, kind: str = "field") -> dict:
        parent, _, name = path.rpartition("/")
        return {
            "path": path,
            "name": name,
            "kind": kind,
            "type": kind if kind != "field" else "string",
            "parent": parent,
            "labels": {"default": label},
        }

    schema = {
        "root": "data",
        "fields": [
            field("/data/name", "Nom"),
            field("/data/about", "Informations sur ${name}", "group"),
            field("/data/about/village", "Village de ${name}"),
            field("/data/child", "Enfant de ${name}", "repeat"),
            field("/data/child/first", "Prénom"),
            # pyxform writes a sibling in a repeat relative: ``../first``.
            field(
                "/data/child/note", "${../first}, enfant de ${name}, vit à ${village} (${nothing})"
            ),
        ],
    }
    document = {
        "name": "Awa",
        "about": {"village": "Ségou"},
        "child": [{"first": "Issa", "note": ""}, {"first": "Mariam", "note": ""}],
    }
    labels = [a.label for a in structure.answers(schema, document, None, str, set())]
    assert labels == [
        "Nom",
        "Informations sur Awa",
        "Village de Awa",
        # In a repeat instance, ${first} is that instance's own answer, as in ODK Collect;
        # a reference to something never answered shows as nothing.
        "Enfant de Awa #1",
        "Prénom",
        "Issa, enfant de Awa, vit à Ségou ()",
        "Enfant de Awa #2",
        "Prénom",
        "Mariam, enfant de Awa, vit à Ségou ()",
    ]


def test_next_keeps_only_paths_of_this_site():
    from server.web.common import safe_next

    for kept in ("/", "/projects/1?state=hasIssues&q=été", "/projects/1#log", "/a b"):
        assert safe_next(kept, "/home") == kept
    for refused in (
        None,
        "",
        "projects/1",
        "//evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\\evil.example",
        "\\/evil.example",
        " /projects",
        "/\x85/evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
    ):
        assert safe_next(refused, "/home") == "/home", repr(refused)


def test_a_question_whose_name_begins_with_meta_is_shown():
    schema = {
        "root": "data",
        "fields": [
            {"path": "/data/metadata", "name": "metadata", "kind": "field", "type": "string"},
            {"path": "/data/meta", "name": "meta", "kind": "group", "type": "group"},
            {"path": "/data/meta/instanceID", "name": "instanceID", "parent": "/data/meta"},
        ],
    }
    assert [r.name for r in structure.structure(schema)[1]] == ["metadata"]
    answers = structure.answers(schema, {"metadata": "x", "meta": {}}, None, str, set())
    assert [(a.name, a.value) for a in answers] == [("metadata", "x")]


def test_two_records_side_by_side_pair_each_answer_by_its_place():
    from tests.support.openrosa import schema

    form = schema()
    first = {"name": "Awa", "age": "34", "members": [{"member_name": "Moussa"}]}
    second = {
        "name": "Awa",
        "age": "35",
        "members": [{"member_name": "Moussa"}, {"member_name": "Fanta"}],
    }
    pairs = structure.side_by_side(
        structure.answers(form, first, None, str, set()),
        structure.answers(form, second, None, str, set()),
    )
    keys = [p.shown.key for p in pairs]
    assert keys.index("/members[2]") == keys.index("/members[1]/member_photo") + 1
    assert keys[-2:] == ["/members[2]/member_name", "/members[2]/member_photo"]
    differing = [p.shown.key for p in pairs if p.differs]
    assert differing == [
        "/age",
        "/members[2]",
        "/members[2]/member_name",
        "/members[2]/member_photo",
    ]
    fanta = next(p for p in pairs if p.shown.key == "/members[2]/member_name")
    assert fanta.first is None and fanta.second.value == "Fanta"
