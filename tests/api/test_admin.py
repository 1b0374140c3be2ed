"""Tenants, keys and usage through /v1/admin."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_problem, make_namespace, make_tenant
from tests.conftest import Api


def test_platform_key_creates_lists_reads_updates_and_deletes_tenants(api: Api) -> None:
    created = api.client.post(
        "/v1/admin/tenants",
        json={"name": "acme", "quotas": {"requests_per_minute": 60}},
        headers=api.headers(),
    )
    assert created.status_code == 201
    tenant = created.json()
    assert tenant["name"] == "acme"
    assert tenant["quotas"] == {"requests_per_minute": 60}

    listed = api.client.get("/v1/admin/tenants", headers=api.headers()).json()
    assert [t["id"] for t in listed] == [tenant["id"]]

    patched = api.client.patch(
        f"/v1/admin/tenants/{tenant['id']}",
        json={"quotas": {"tokens_per_minute": 1000}},
        headers=api.headers(),
    )
    assert patched.status_code == 200
    assert patched.json()["quotas"] == {"requests_per_minute": 60, "tokens_per_minute": 1000}

    assert (
        api.client.delete(f"/v1/admin/tenants/{tenant['id']}", headers=api.headers()).status_code
        == 204
    )
    gone = api.client.get(f"/v1/admin/tenants/{tenant['id']}", headers=api.headers())
    assert_problem(gone, 404, "not-found")


def test_tenant_names_are_unique(api: Api) -> None:
    make_tenant(api, "acme")
    again = api.client.post("/v1/admin/tenants", json={"name": "acme"}, headers=api.headers())
    assert_problem(again, 409, "conflict")


def test_deleting_a_tenant_removes_its_keys_and_collections(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    collection = "ns_" + namespace["id"].replace("-", "")
    api.client.delete(f"/v1/admin/tenants/{tenant.id}", headers=api.headers())
    refused = api.client.get("/v1/namespaces", headers=api.headers(tenant.admin_key))
    assert_problem(refused, 401, "unauthenticated")
    assert not (api.platform.settings.data_dir / "qdrant" / collection).exists()


@pytest.mark.parametrize("scope", ["admin", "write", "query"])
def test_tenant_keys_cannot_manage_tenants(api: Api, scope: str) -> None:
    tenant = make_tenant(api, "acme")
    key = getattr(tenant, f"{scope}_key")
    for method, path in [
        ("POST", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants"),
        ("PATCH", f"/v1/admin/tenants/{tenant.id}"),
        ("DELETE", f"/v1/admin/tenants/{tenant.id}"),
    ]:
        body: dict[str, object] = {"name": "x"} if method == "POST" else {"quotas": {}}
        response = api.client.request(method, path, json=body, headers=api.headers(key))
        assert_problem(response, 403, "forbidden")


def test_key_listing_never_shows_a_secret(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    listed = api.client.get(f"/v1/admin/tenants/{tenant.id}/keys", headers=api.headers())
    assert listed.status_code == 200
    assert sorted(k["name"] for k in listed.json()) == ["admin", "query", "write"]
    for secret in (tenant.admin_key, tenant.write_key, tenant.query_key):
        assert secret.split("_", 2)[2] not in listed.text
    assert all("key" not in k for k in listed.json())


def test_tenant_admin_manages_its_own_keys(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    created = api.client.post(
        f"/v1/admin/tenants/{tenant.id}/keys",
        json={"name": "ci", "scopes": ["write", "query"]},
        headers=api.headers(tenant.admin_key),
    )
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith(f"shoal_{key['id']}_")
    assert key["scopes"] == ["query", "write"]


def test_write_or_query_keys_cannot_create_keys(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    for key in (tenant.write_key, tenant.query_key):
        response = api.client.post(
            f"/v1/admin/tenants/{tenant.id}/keys",
            json={"name": "x", "scopes": ["admin"]},
            headers=api.headers(key),
        )
        assert_problem(response, 403, "forbidden")


def test_admin_of_one_tenant_gets_the_same_404_for_another_tenant_as_for_none(api: Api) -> None:
    a = make_tenant(api, "a")
    b = make_tenant(api, "b")
    headers = api.headers(a.admin_key)
    for path in (f"/v1/admin/tenants/{b.id}/keys", f"/v1/admin/tenants/{b.id}/usage"):
        other = api.client.get(path, headers=headers)
        missing = api.client.get(path.replace(b.id, "no-such-tenant"), headers=headers)
        assert_problem(other, 404, "not-found")
        assert other.json()["detail"].replace(b.id, "X") == missing.json()["detail"].replace(
            "no-such-tenant", "X"
        )
    b_key_id = b.query_key.split("_")[1]
    revoke = api.client.delete(f"/v1/admin/keys/{b_key_id}", headers=headers)
    assert_problem(revoke, 404, "not-found")
    still_works = api.client.get("/v1/namespaces", headers=api.headers(b.query_key))
    assert still_works.status_code == 200


def test_a_key_revoked_between_two_requests_is_refused_on_the_second(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    headers = api.headers(tenant.query_key)
    assert api.client.get("/v1/namespaces", headers=headers).status_code == 200
    key_id = tenant.query_key.split("_")[1]
    revoked = api.client.delete(f"/v1/admin/keys/{key_id}", headers=api.headers(tenant.admin_key))
    assert revoked.status_code == 204
    assert_problem(api.client.get("/v1/namespaces", headers=headers), 401, "unauthenticated")
    listed = api.client.get(f"/v1/admin/tenants/{tenant.id}/keys", headers=api.headers()).json()
    assert next(k for k in listed if k["id"] == key_id)["revoked_at"] is not None


def test_unknown_scope_is_a_422_naming_the_field(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    response = api.client.post(
        f"/v1/admin/tenants/{tenant.id}/keys",
        json={"name": "x", "scopes": ["root"]},
        headers=api.headers(),
    )
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"][:2] == ["body", "scopes"]


def test_usage_counts_queries_per_key_and_day(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    for _ in range(3):
        r = api.client.post(
            "/v1/namespaces/docs/query",
            json={"question": "anything?"},
            headers=api.headers(tenant.query_key),
        )
        assert r.status_code == 200, r.text
    rows = api.client.get(
        f"/v1/admin/tenants/{tenant.id}/usage", headers=api.headers(tenant.admin_key)
    )
    assert rows.status_code == 200
    [row] = rows.json()
    assert row["key_id"] == tenant.query_key.split("_")[1]
    assert row["requests"] == 3
