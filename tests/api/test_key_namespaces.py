"""Keys limited to some namespaces (``namespaces`` on key creation): every other namespace of
the tenant, and its documents and jobs, answer exactly as missing ones do."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.conftest import (
    Response,
    Tenant,
    assert_problem,
    make_namespace,
    make_tenant,
    upload,
    wait_for_job,
)
from tests.conftest import Api


def make_key(api: Api, tenant: Tenant, scopes: list[str], namespaces: Any) -> Response:
    return api.client.post(
        f"/v1/admin/tenants/{tenant.id}/keys",
        json={"name": "limited", "scopes": scopes, "namespaces": namespaces},
        headers=api.headers(tenant.admin_key),
    )


def same_answer(hidden: Response, missing: Response, names: tuple[str, str]) -> None:
    """Two problems alike but for the name each echoes."""
    assert_problem(hidden, 404, "not-found")
    assert missing.status_code == 404
    assert hidden.json()["detail"].replace(names[0], "X") == missing.json()["detail"].replace(
        names[1], "X"
    )
    assert {k: v for k, v in hidden.json().items() if k != "detail"} == {
        k: v for k, v in missing.json().items() if k != "detail"
    }


def test_a_limited_key_reaches_its_namespaces_and_no_other(api_any_db: Api) -> None:
    api = api_any_db
    tenant = make_tenant(api, "acme")
    for name in ("docs", "wiki"):
        make_namespace(api, tenant, name)
    jobs = {
        name: upload(
            api,
            tenant,
            name,
            [{"text": f"The {name} mention sea otters.", "filename": f"{name}.txt"}],
        )
        for name in ("docs", "wiki")
    }
    for job in jobs.values():
        wait_for_job(api, tenant, job["job_id"])
    wiki_doc = jobs["wiki"]["documents"][0]["id"]
    made = make_key(api, tenant, ["write", "query"], ["docs"])
    assert made.status_code == 201, made.text
    assert made.json()["namespaces"] == ["docs"]
    key = api.headers(made.json()["key"])

    listed = api.client.get("/v1/namespaces", headers=key).json()
    assert [n["name"] for n in listed] == ["docs"]
    found = api.client.post("/v1/namespaces/docs/search", json={"question": "otters"}, headers=key)
    assert [p["filename"] for p in found.json()["passages"]] == ["docs.txt"]
    assert api.client.get(f"/v1/jobs/{jobs['docs']['job_id']}", headers=key).status_code == 200

    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/namespaces/{ns}", None),
        ("GET", "/v1/namespaces/{ns}/documents", None),
        ("GET", "/v1/namespaces/{ns}/documents/" + wiki_doc, None),
        ("DELETE", "/v1/namespaces/{ns}/documents/" + wiki_doc, None),
        ("POST", "/v1/namespaces/{ns}/documents", {"documents": [{"text": "x"}]}),
        ("POST", "/v1/namespaces/{ns}/search", {"question": "otters"}),
        ("POST", "/v1/namespaces/{ns}/query", {"question": "otters"}),
        ("POST", "/v1/namespaces/{ns}/query", {"question": "otters", "stream": True}),
    ]
    for method, path, body in requests:
        probe = {**key, "X-Request-ID": f"probe-{uuid.uuid4().hex}"}  # the same for both
        hidden = api.client.request(method, path.format(ns="wiki"), json=body, headers=probe)
        missing = api.client.request(method, path.format(ns="nowhere"), json=body, headers=probe)
        same_answer(hidden, missing, ("wiki", "nowhere"))
    wiki_job, no_job = jobs["wiki"]["job_id"], str(uuid.uuid4())
    probe = {**key, "X-Request-ID": f"probe-{uuid.uuid4().hex}"}
    hidden_job = api.client.get(f"/v1/jobs/{wiki_job}", headers=probe)
    missing_job = api.client.get(f"/v1/jobs/{no_job}", headers=probe)
    same_answer(hidden_job, missing_job, (wiki_job, no_job))

    # The probes changed nothing: the wiki's document is still there for an unlimited key.
    owner = api.headers(tenant.query_key)
    still = api.client.get(f"/v1/namespaces/wiki/documents/{wiki_doc}", headers=owner)
    assert still.status_code == 200, still.text
    assert [n["name"] for n in api.client.get("/v1/namespaces", headers=owner).json()] == [
        "docs",
        "wiki",
    ]


@pytest.mark.parametrize(
    ("scopes", "namespaces", "slug", "says"),
    [
        (["admin"], ["docs"], "invalid-request", "only write and query keys"),
        (["query"], ["docs", "nope"], "invalid-request", "'nope'"),
        (["query"], [], "validation-error", "at least 1"),
        (["query"], ["Not A Name"], "validation-error", "pattern"),
    ],
)
def test_bad_namespace_limits_are_refused(
    api: Api, scopes: list[str], namespaces: list[str], slug: str, says: str
) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    refused = assert_problem(make_key(api, tenant, scopes, namespaces), 422, slug)
    assert says in refused["detail"]


def test_a_limit_names_the_tenants_own_namespaces_only(api: Api) -> None:
    acme, other = make_tenant(api, "acme"), make_tenant(api, "other")
    make_namespace(api, other, "theirs")
    refused = assert_problem(make_key(api, acme, ["query"], ["theirs"]), 422, "invalid-request")
    assert refused["field"] == "namespaces"


def test_keys_list_their_limits(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    made = make_key(api, tenant, ["query"], ["docs", "docs"]).json()
    listed = api.client.get(
        f"/v1/admin/tenants/{tenant.id}/keys", headers=api.headers(tenant.admin_key)
    ).json()
    limits = {k["id"]: k["namespaces"] for k in listed}
    assert limits[made["id"]] == ["docs"]
    assert [v for k, v in limits.items() if k != made["id"]] == [None, None, None]
