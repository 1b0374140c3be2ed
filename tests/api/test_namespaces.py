"""Namespaces through /v1/namespaces: lifecycle, scopes, tenancy."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_problem, make_namespace, make_tenant
from tests.conftest import Api


def test_admin_creates_reads_updates_lists_and_deletes_a_namespace(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    headers = api.headers(tenant.admin_key)
    created = make_namespace(api, tenant, "papers", indexed_fields={"year": "integer"})
    assert created["embedding_model"] == "all-MiniLM-L6-v2"
    assert created["embedding_dimension"] == 384
    assert created["indexed_fields"] == {"year": "integer"}

    read = api.client.get("/v1/namespaces/papers", headers=headers)
    assert read.json()["id"] == created["id"]

    patched = api.client.patch(
        "/v1/namespaces/papers",
        json={"indexed_fields": {"year": "integer", "lang": "keyword"}},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["indexed_fields"] == {"year": "integer", "lang": "keyword"}

    listed = api.client.get("/v1/namespaces", headers=headers).json()
    assert [n["name"] for n in listed] == ["papers"]

    assert api.client.delete("/v1/namespaces/papers", headers=headers).status_code == 204
    assert_problem(api.client.get("/v1/namespaces/papers", headers=headers), 404, "not-found")


def test_deleting_a_namespace_drops_its_collection(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    created = make_namespace(api, tenant, "docs")
    shard = api.platform.settings.data_dir / "qdrant" / ("ns_" + created["id"].replace("-", ""))
    assert shard.exists()
    api.client.delete("/v1/namespaces/docs", headers=api.headers(tenant.admin_key))
    assert not shard.exists()


def test_collection_is_named_from_the_id_not_the_user_text(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    created = make_namespace(api, tenant, "my-docs")
    names = [p.name for p in (api.platform.settings.data_dir / "qdrant").iterdir()]
    assert names == ["ns_" + created["id"].replace("-", "")]


def test_namespace_names_are_unique_within_a_tenant_only(api: Api) -> None:
    a = make_tenant(api, "a")
    b = make_tenant(api, "b")
    make_namespace(api, a, "docs")
    make_namespace(api, b, "docs")
    again = api.client.post(
        "/v1/namespaces", json={"name": "docs"}, headers=api.headers(a.admin_key)
    )
    assert_problem(again, 409, "conflict")


@pytest.mark.parametrize("name", ["", "Upper", "has space", "../etc", "x" * 64, "-lead"])
def test_bad_namespace_names_are_422(api: Api, name: str) -> None:
    tenant = make_tenant(api, "acme")
    response = api.client.post(
        "/v1/namespaces", json={"name": name}, headers=api.headers(tenant.admin_key)
    )
    assert_problem(response, 422, "validation-error")


def test_unknown_field_type_and_other_model_are_422(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    headers = api.headers(tenant.admin_key)
    bad_type = api.client.post(
        "/v1/namespaces", json={"name": "a", "indexed_fields": {"year": "number"}}, headers=headers
    )
    assert_problem(bad_type, 422, "validation-error")
    other_model = api.client.post(
        "/v1/namespaces", json={"name": "a", "embedding_model": "bge-large"}, headers=headers
    )
    assert assert_problem(other_model, 422, "invalid-request")["field"] == "embedding_model"


def test_indexed_fields_cannot_be_retyped(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", indexed_fields={"year": "integer"})
    response = api.client.patch(
        "/v1/namespaces/docs",
        json={"indexed_fields": {"year": "keyword"}},
        headers=api.headers(tenant.admin_key),
    )
    assert assert_problem(response, 422, "invalid-request")["field"] == "indexed_fields.year"


def test_write_and_query_keys_read_but_do_not_manage_namespaces(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    for key in (tenant.write_key, tenant.query_key):
        headers = api.headers(key)
        assert api.client.get("/v1/namespaces", headers=headers).status_code == 200
        assert api.client.get("/v1/namespaces/docs", headers=headers).status_code == 200
        create = api.client.post("/v1/namespaces", json={"name": "new"}, headers=headers)
        assert_problem(create, 403, "forbidden")
        patch = api.client.patch("/v1/namespaces/docs", json={"routes": {}}, headers=headers)
        assert_problem(patch, 403, "forbidden")
        assert_problem(api.client.delete("/v1/namespaces/docs", headers=headers), 403, "forbidden")


def test_platform_key_has_no_tenant_namespaces(api: Api) -> None:
    response = api.client.get("/v1/namespaces", headers=api.headers())
    assert_problem(response, 403, "forbidden")


def test_another_tenants_namespace_is_the_same_404_as_a_missing_one(api_any_db: Api) -> None:
    api = api_any_db
    a = make_tenant(api, "a")
    b = make_tenant(api, "b")
    make_namespace(api, b, "secret")
    for method in ("GET", "PATCH", "DELETE"):
        body: dict[str, object] | None = {"routes": {}} if method == "PATCH" else None
        theirs = api.client.request(
            method, "/v1/namespaces/secret", headers=api.headers(a.admin_key), json=body
        )
        missing = api.client.request(
            method, "/v1/namespaces/nothing", headers=api.headers(a.admin_key), json=body
        )
        assert_problem(theirs, 404, "not-found")
        assert theirs.json()["detail"].replace("secret", "X") == missing.json()["detail"].replace(
            "nothing", "X"
        )
    assert (
        api.client.get("/v1/namespaces/secret", headers=api.headers(b.admin_key)).status_code == 200
    )
