"""Factories that act through the HTTP API, as a user would."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tests.conftest import Api

PROBLEM_JSON = "application/problem+json"


class Response(Protocol):
    """What tests read of a response (TestClient's and httpx's alike)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


@dataclass
class Tenant:
    id: str
    admin_key: str
    write_key: str
    query_key: str


def make_tenant(api: Api, name: str) -> Tenant:
    response = api.client.post("/v1/admin/tenants", json={"name": name}, headers=api.headers())
    assert response.status_code == 201, response.text
    tenant_id = response.json()["id"]
    made = {}
    for scope in ("admin", "write", "query"):
        r = api.client.post(
            f"/v1/admin/tenants/{tenant_id}/keys",
            json={"name": scope, "scopes": [scope]},
            headers=api.headers(),
        )
        assert r.status_code == 201, r.text
        made[scope] = r.json()["key"]
    return Tenant(tenant_id, made["admin"], made["write"], made["query"])


def make_namespace(api: Api, tenant: Tenant, name: str = "docs", **fields: Any) -> dict[str, Any]:
    response = api.client.post(
        "/v1/namespaces", json={"name": name, **fields}, headers=api.headers(tenant.admin_key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def upload(api: Api, tenant: Tenant, ns: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.client.post(
        f"/v1/namespaces/{ns}/documents",
        json={"documents": documents},
        headers=api.headers(tenant.write_key),
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_job(api: Api, tenant: Tenant, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """Poll the job as a client would until it reaches a terminal state."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(tenant.write_key))
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["state"] in ("succeeded", "partial", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
        time.sleep(0.1)


def assert_problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert "Traceback" not in response.text
    return body
