"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis),
against a real server: no generated request, valid or not, may cause a server error,
and documented responses must match their schemas."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, settings  # noqa: E402

from sdl.service.testing import start_lab  # noqa: E402


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-fuzz"), ("sim-xrd",), rate_limit_per_minute=1e7,
                    rate_limit_burst=100_000)
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def api_schema(lab):
    from schemathesis.config import SchemathesisConfig

    # fuzzing only (valid and invalid data from the schema), a few examples per operation: CI-sized
    config = SchemathesisConfig.from_dict({
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "generation": {"max-examples": 3},
    })
    return schemathesis.openapi.from_url(f"{lab.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_never_fails_on_generated_requests(case, lab):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    case.call_and_validate(headers={"Authorization": f"Bearer {lab.server.admin_token}"},
                           checks=[not_a_server_error, response_schema_conformance])


def test_fuzzing_reached_the_api(lab):
    """The generated requests were authenticated and did real work (accounts were created)."""
    users = lab.admin.get("/api/users")
    assert len(users) >= 2
