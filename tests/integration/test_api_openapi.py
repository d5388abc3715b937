"""The OpenAPI document: valid OpenAPI 3, and no /v1 route of the app missing from it."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from tests.support import factories

ARGUMENT = re.compile(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>")


def test_the_document_is_valid_and_lists_every_v1_route(app, client):
    answer = client.get("/v1/openapi.json")
    assert answer.status_code == 200 and answer.content_type == "application/json"
    document = answer.json
    validate(document)
    expected = {
        (ARGUMENT.sub(r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    listed = {(path, method) for path, item in document["paths"].items() for method in item}
    assert expected - listed == set()
    assert listed - expected == set()
    assert len(expected) > 100


def test_operations_carry_their_schemas(client):
    document = client.get("/v1/openapi.json").json
    paths, schemas = document["paths"], document["components"]["schemas"]
    submissions = "/v1/projects/{project_id}/forms/{xml_form_id}/submissions"
    listing = paths[submissions]["get"]
    assert listing["summary"].startswith("List a form's records")
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert {p["name"] for p in listing["parameters"]} >= {"project_id", "cursor", "limit"}
    review = paths[submissions + "/{instance_id}"]["patch"]
    body = review["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body == "#/components/schemas/ReviewIn"
    assert schemas["ReviewIn"]["required"] == ["reviewState"]
    # Answers list every key (pyodk refuses objects with a key missing).
    assert set(schemas["SubmissionOut"]["required"]) >= {"instanceId", "submitterId", "createdAt"}
    assert set(schemas["EntityVersionOut"]["required"]) >= {"label", "userAgent", "version"}
    create = paths[submissions]["post"]["requestBody"]["content"]
    assert "application/xml" in create
    assert (
        paths["/v1/projects"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
            "items"
        ]["$ref"]
        == "#/components/schemas/ProjectOut"
    )
    problem = paths["/v1/audits"]["get"]["responses"]["default"]
    assert problem["content"]["application/json"]["schema"]["$ref"].endswith("ProblemOut")


def test_the_document_needs_no_sign_in_and_signed_in_users_get_the_same(client, db_session):
    factories.user(db_session, "coord@example.org")
    token = client.post(
        "/v1/sessions", json={"email": "coord@example.org", "password": factories.PASSWORD}
    ).json["token"]
    signed_in = client.get("/v1/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert signed_in.json == client.get("/v1/openapi.json").json
