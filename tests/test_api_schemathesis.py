"""Schemathesis against the API's own OpenAPI document, in-process on the Flask app (SQLite).

Generated requests, valid and invalid, must never meet a server error, and every answer
must match the document: its status codes, content type, headers and body schemas.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_api import BASE_URL, cheap_hashing, close, make_app, seed
from webui.openapi import document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

schema = schemathesis.openapi.from_dict(document(BASE_URL))
schema.config.generation.update(max_examples=25, deterministic=True, no_shrink=True)


@pytest.fixture
def api_app(tmp_path, sqlite_url, monkeypatch):
    cheap_hashing(monkeypatch)
    app = make_app(tmp_path, sqlite_url)
    world = seed(app)
    served = app.test_client().get("/api/v1/openapi.json").json
    assert served == document(BASE_URL)  # the document under test is the one the app serves
    yield app, world.tokens["admin"]
    close(app)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))  # one app per operation, shared by its examples
def test_every_operation_conforms_and_never_fails(case, api_app):
    app, token = api_app
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
