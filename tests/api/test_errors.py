"""Every error is RFC 9457 problem+json with the right status; nothing leaks."""

from __future__ import annotations

from tests.api.conftest import assert_problem
from tests.conftest import Api


def test_missing_malformed_and_unknown_keys_are_401(api: Api) -> None:
    no_key = api.client.get("/v1/namespaces")
    assert assert_problem(no_key, 401, "unauthenticated")
    assert no_key.headers["www-authenticate"] == "Bearer"
    for token in ("nonsense", "shoal_", "shoal_abc", "shoal_0000000000000000_wrongsecret"):
        assert_problem(
            api.client.get("/v1/namespaces", headers=api.headers(token)), 401, "unauthenticated"
        )
    key_id = api.platform_key.split("_")[1]
    wrong_secret = api.client.get("/v1/admin/tenants", headers=api.headers(f"shoal_{key_id}_guess"))
    assert_problem(wrong_secret, 401, "unauthenticated")


def test_unknown_route_is_404_and_wrong_method_is_405(api: Api) -> None:
    assert_problem(api.client.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(
        api.client.put("/v1/admin/tenants", headers=api.headers()), 405, "method-not-allowed"
    )


def test_validation_errors_list_each_problem(api: Api) -> None:
    response = api.client.post(
        "/v1/admin/tenants", json={"quotas": {"requests_per_minute": -1}}, headers=api.headers()
    )
    body = assert_problem(response, 422, "validation-error")
    locations = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "name") in locations
    assert ("body", "quotas", "requests_per_minute") in locations


def test_unexpected_errors_are_a_bare_500_with_no_stack(api: Api) -> None:
    def explode() -> None:
        raise RuntimeError("secret internal detail")

    api.client.app.add_api_route("/boom", explode)  # type: ignore[attr-defined]
    response = api.client.get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "secret internal detail" not in response.text
    assert body["instance"].startswith("urn:shoal:request:")


def test_request_id_is_echoed_and_minted(api: Api) -> None:
    echoed = api.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    minted = api.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\x01"})
    assert minted.headers["x-request-id"] != "bad id with spaces\x01"
    problem = api.client.get("/v1/namespaces", headers={"X-Request-ID": "req-9"})
    assert problem.json()["instance"] == "urn:shoal:request:req-9"


def test_metrics_are_prometheus_text_labelled_by_route_template(api: Api) -> None:
    api.client.get("/v1/namespaces/some-name", headers=api.headers())
    text = api.client.get("/metrics").text
    assert 'route="/v1/namespaces/{ns}"' in text
    assert "some-name" not in text
    assert "shoal_queue_depth" in text


def test_health_readiness_and_docs_need_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["vector_store"] == "ok"
    assert api.client.get("/docs").status_code == 200
    spec = api.client.get("/openapi.json").json()
    assert "/v1/namespaces/{ns}/documents" in spec["paths"]
    upload_body = spec["paths"]["/v1/namespaces/{ns}/documents"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= upload_body.keys()
