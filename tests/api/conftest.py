"""Factories that act through the HTTP API, as a user would: on the app in process
(:class:`~tests.conftest.Api`) or on ``shoal serve`` over real HTTP
(:class:`~tests.conftest.Served`)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx
import httpx2
from fastapi.testclient import TestClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from tests.conftest import Api, Served

PROBLEM_JSON = "application/problem+json"
T = TypeVar("T")


class Response(Protocol):
    """What tests read of a response (TestClient's and httpx's alike)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


class AnyApi(Protocol):
    """An HTTP client on the app (TestClient in process, or httpx on a served one) and the
    headers that carry a key (the platform key by default)."""

    @property
    def client(self) -> TestClient | httpx.Client: ...  # TestClient may be built on httpx2
    def headers(self, key: str | None = None) -> dict[str, str]: ...


@dataclass
class Tenant:
    id: str
    admin_key: str
    write_key: str
    query_key: str


def make_tenant(api: AnyApi, name: str) -> Tenant:
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


def make_namespace(
    api: AnyApi, tenant: Tenant, name: str = "docs", **fields: Any
) -> dict[str, Any]:
    response = api.client.post(
        "/v1/namespaces", json={"name": name, **fields}, headers=api.headers(tenant.admin_key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def upload(api: AnyApi, tenant: Tenant, ns: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.client.post(
        f"/v1/namespaces/{ns}/documents",
        json={"documents": documents},
        headers=api.headers(tenant.write_key),
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_job(
    api: AnyApi, tenant: Tenant, job_id: str, timeout_s: float = 120
) -> dict[str, Any]:
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


def query_events(
    api: AnyApi, tenant: Tenant, question: str, *, ns: str = "docs", **extra: Any
) -> tuple[Response, list[tuple[str, Any]]]:
    """A streamed query's response and its Server-Sent Events, as ``(event, data)`` pairs."""
    events: list[tuple[str, Any]] = []
    with api.client.stream(
        "POST",
        f"/v1/namespaces/{ns}/query",
        json={"question": question, "stream": True, **extra},
        headers=api.headers(tenant.query_key),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((str(name), json.loads(line.split(":", 1)[1])))
    return response, events


def mcp_session(
    served: Served, key: str, work: Callable[[Client], Awaitable[T]], *, mode: str = "auto"
) -> T:
    """Run ``work`` on the MCP SDK's own client, connected to ``served``'s ``/mcp`` over
    Streamable HTTP with ``key`` as the Bearer token (``mode="legacy"``: the initialize
    handshake of 2025 clients; ``"auto"``: the 2026-07-28 protocol, sessionless)."""

    async def session() -> T:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=240) as http:
            transport = streamable_http_client(served.url + "/mcp", http_client=http)
            async with Client(transport, mode=mode) as client:
                return await work(client)

    return anyio.run(session)


def call_tool(served: Served, key: str, tool: str, **arguments: Any) -> CallToolResult:
    """One MCP tool call on its own connection, as an agent's first call is."""

    async def work(client: Client) -> CallToolResult:
        return await client.call_tool(tool, arguments)

    return mcp_session(served, key, work)


def mcp_in_process(api: Api, key: str, work: Callable[[Client], Awaitable[T]]) -> T:
    """As :func:`mcp_session`, on the app in process (ASGI calls in the TestClient's event loop,
    where the app's lifespan runs the MCP session manager; no socket)."""

    async def session() -> T:
        transport = httpx2.ASGITransport(app=api.client.app)
        headers = {"Authorization": f"Bearer {key}"}
        base = "http://127.0.0.1:8000"  # a Host the MCP door answers by default
        http = httpx2.AsyncClient(transport=transport, base_url=base, headers=headers)
        async with (
            http,
            Client(streamable_http_client(base + "/mcp", http_client=http)) as client,
        ):
            return await work(client)

    assert api.client.portal is not None, "inside the TestClient's context"
    return api.client.portal.call(session)
