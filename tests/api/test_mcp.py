"""The MCP door (``/mcp``), through the MCP SDK's own client over Streamable HTTP against
``shoal serve`` on a real socket: the same keys, namespaces, limits and answers as ``/v1``.

One server serves the module; each test makes its own tenant."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from tests.api.conftest import (
    Tenant,
    call_tool,
    make_namespace,
    make_tenant,
    mcp_session,
    upload,
    wait_for_job,
)
from tests.conftest import Served, serve_shoal

pytestmark = pytest.mark.slow

ALL_TOOLS = {"list_namespaces", "search", "answer", "add_documents", "job_status"}
OTTERS = "Sea otters hold hands while they sleep so that they do not drift apart."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("mcp")
    with serve_shoal(data, f"sqlite:///{data / 'shoal.db'}") as served:
        yield served


@pytest.fixture
def tenant(served: Served) -> Tenant:
    """A tenant with a namespace ``docs`` holding one indexed document about otters."""
    made = make_tenant(served, f"t-{uuid.uuid4().hex[:12]}")
    make_namespace(served, made, "docs")
    job = upload(served, made, "docs", [{"text": OTTERS, "filename": "otters.txt"}])
    wait_for_job(served, made, job["job_id"])
    return made


def make_key(served: Served, tenant: Tenant, **body: Any) -> dict[str, Any]:
    made = served.client.post(
        f"/v1/admin/tenants/{tenant.id}/keys",
        json={"name": "mcp", **body},
        headers=served.headers(tenant.admin_key),
    )
    assert made.status_code == 201, made.text
    key: dict[str, Any] = made.json()
    return key


def assert_tool_problem(result: CallToolResult, status: int, slug: str) -> dict[str, Any]:
    """A tool error carrying the HTTP problem: its detail as the text, the problem as data."""
    assert result.is_error, result
    problem = result.structured_content
    assert problem is not None
    assert (problem["status"], problem["type"]) == (status, f"/problems/{slug}")
    assert [c.text for c in result.content if c.type == "text"] == [problem["detail"]]
    return dict(problem)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_initialize_and_list_the_tools_each_key_may_call(
    served: Served, tenant: Tenant, mode: str
) -> None:
    async def connect(client: Client) -> tuple[str, str | None, set[str], dict[str, Any]]:
        listed = await client.list_tools()
        schemas = {t.name: t.input_schema for t in listed.tools}
        info = client.server_info
        return client.protocol_version, info.name if info else None, set(schemas), schemas

    version, name, tools, schemas = mcp_session(served, tenant.admin_key, connect, mode=mode)
    assert name == "shoal"
    assert version == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert tools == ALL_TOOLS
    search = schemas["search"]
    assert search["required"] == ["namespace", "query"]
    assert search["properties"]["top_k"]["anyOf"][0] == {
        "maximum": 50,
        "minimum": 1,
        "type": "integer",
    }
    assert search["properties"]["namespace"]["pattern"]
    assert all(p.get("description") for p in search["properties"].values())
    assert schemas["add_documents"]["properties"]["documents"]["maxItems"] == 1000

    listed = {
        scope: mcp_session(served, getattr(tenant, f"{scope}_key"), connect, mode=mode)[2]
        for scope in ("query", "write")
    }
    assert listed["query"] == {"list_namespaces", "search", "answer"}
    assert listed["write"] == {"list_namespaces", "add_documents", "job_status"}


def test_every_tool_answers_as_the_http_routes_do(served: Served, tenant: Tenant) -> None:
    namespaces = call_tool(served, tenant.query_key, "list_namespaces")
    assert not namespaces.is_error
    assert namespaces.structured_content is not None
    assert [n["name"] for n in namespaces.structured_content["namespaces"]] == ["docs"]

    found = call_tool(served, tenant.query_key, "search", namespace="docs", query="otters", top_k=3)
    assert not found.is_error, found
    assert found.structured_content is not None
    passages = found.structured_content["passages"]
    assert [(p["filename"], p["text"]) for p in passages] == [("otters.txt", OTTERS)]
    over_http = served.client.post(
        "/v1/namespaces/docs/search",
        json={"question": "otters", "top_k": 3},
        headers=served.headers(tenant.query_key),
    ).json()["passages"]
    assert [(p["document_id"], p["chunk_id"]) for p in passages] == [
        (p["document_id"], p["chunk_id"]) for p in over_http
    ]
    assert passages[0]["score"] == pytest.approx(over_http[0]["score"])

    answered = call_tool(
        served, tenant.query_key, "answer", namespace="docs", question="How do sea otters sleep?"
    )
    assert answered.structured_content is not None
    answer = answered.structured_content
    assert answer["answerable"], answer
    assert {c["document_id"] for c in answer["citations"]} == {passages[0]["document_id"]}
    asked_over_http = served.client.post(
        "/v1/namespaces/docs/query",
        json={"question": "How do sea otters sleep?"},
        headers=served.headers(tenant.query_key),
    ).json()
    assert {k: v for k, v in answer.items() if k != "timings_ms"} == {
        k: v for k, v in asked_over_http.items() if k != "timings_ms"
    }
    off_topic = call_tool(
        served, tenant.query_key, "answer", namespace="docs", question="Who won the 1998 World Cup?"
    )
    assert off_topic.structured_content is not None
    assert not off_topic.structured_content["answerable"]

    added = call_tool(
        served,
        tenant.write_key,
        "add_documents",
        namespace="docs",
        documents=[
            {"text": "Mount Etna is the most active volcano in Europe.", "filename": "etna.txt"}
        ],
    )
    assert added.structured_content is not None, added
    job_id = added.structured_content["job_id"]
    deadline = time.monotonic() + 120
    while True:
        status = call_tool(served, tenant.write_key, "job_status", job_id=job_id)
        assert status.structured_content is not None, status
        if status.structured_content["state"] in ("succeeded", "failed", "partial"):
            break
        assert time.monotonic() < deadline, status.structured_content
        time.sleep(0.2)
    assert status.structured_content["state"] == "succeeded"
    assert (
        status.structured_content
        == served.client.get(f"/v1/jobs/{job_id}", headers=served.headers(tenant.write_key)).json()
    )
    volcano = call_tool(served, tenant.query_key, "search", namespace="docs", query="volcano")
    assert volcano.structured_content is not None
    assert volcano.structured_content["passages"][0]["filename"] == "etna.txt"


def test_another_tenants_namespace_is_not_found_as_a_missing_one(
    served: Served, tenant: Tenant
) -> None:
    other = make_tenant(served, f"o-{uuid.uuid4().hex[:12]}")
    make_namespace(served, other, "secret")
    job = upload(served, other, "secret", [{"text": "The vault code is 4711."}])
    for tool, args in [
        ("search", {"query": "vault code"}),
        ("answer", {"question": "What is the vault code?"}),
    ]:
        theirs = call_tool(served, tenant.admin_key, tool, namespace="secret", **args)
        missing = call_tool(served, tenant.admin_key, tool, namespace="nothing", **args)
        problem = assert_tool_problem(theirs, 404, "not-found")
        assert problem["detail"] == "namespace 'secret' not found"
        assert (
            assert_tool_problem(missing, 404, "not-found")["detail"]
            == "namespace 'nothing' not found"
        )
    added = call_tool(
        served, tenant.admin_key, "add_documents", namespace="secret", documents=[{"text": "x"}]
    )
    assert_tool_problem(added, 404, "not-found")
    theirs_job = call_tool(served, tenant.admin_key, "job_status", job_id=job["job_id"])
    assert (
        assert_tool_problem(theirs_job, 404, "not-found")["detail"]
        == f"job {job['job_id']!r} not found"
    )
    # The same detail as the HTTP door's problem.
    over_http = served.client.post(
        "/v1/namespaces/secret/search",
        json={"question": "vault code"},
        headers=served.headers(tenant.admin_key),
    )
    assert over_http.json()["detail"] == "namespace 'secret' not found"


def test_a_revoked_key_is_refused_on_its_next_call(served: Served, tenant: Tenant) -> None:
    key = make_key(served, tenant, scopes=["query"])

    async def calls(client: Client) -> tuple[CallToolResult, BaseException | None]:
        first = await client.call_tool("list_namespaces", {})
        revoked = served.client.delete(
            f"/v1/admin/keys/{key['id']}", headers=served.headers(tenant.admin_key)
        )
        assert revoked.status_code == 204
        try:
            await client.call_tool("list_namespaces", {})
        except MCPError as exc:
            return first, exc
        return first, None

    first, refused = mcp_session(served, key["key"], calls)
    assert not first.is_error
    assert isinstance(refused, MCPError)
    # Over plain HTTP: the 401 of a key that never existed.
    for token in (key["key"], f"shoal_{uuid.uuid4().hex[:16]}_nope"):
        answer = httpx.post(
            served.url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_key_limited_to_one_namespace_reaches_that_one_only(
    served: Served, tenant: Tenant
) -> None:
    make_namespace(served, tenant, "wiki")
    job = upload(served, tenant, "wiki", [{"text": OTTERS + " Wiki copy.", "filename": "wiki.txt"}])
    wait_for_job(served, tenant, job["job_id"])
    key = make_key(served, tenant, scopes=["query", "write"], namespaces=["docs"])["key"]

    listed = call_tool(served, key, "list_namespaces")
    assert listed.structured_content is not None
    assert [n["name"] for n in listed.structured_content["namespaces"]] == ["docs"]
    found = call_tool(served, key, "search", namespace="docs", query="otters")
    assert found.structured_content is not None
    assert {p["filename"] for p in found.structured_content["passages"]} == {"otters.txt"}
    hidden = call_tool(served, key, "search", namespace="wiki", query="otters")
    assert assert_tool_problem(hidden, 404, "not-found")["detail"] == "namespace 'wiki' not found"
    hidden_job = call_tool(served, key, "job_status", job_id=job["job_id"])
    assert_tool_problem(hidden_job, 404, "not-found")
    refused = call_tool(served, key, "add_documents", namespace="wiki", documents=[{"text": "x"}])
    assert_tool_problem(refused, 404, "not-found")


def test_a_read_only_key_cannot_call_the_write_tools(served: Served, tenant: Tenant) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("add_documents", {"namespace": "docs", "documents": [{"text": "x"}]}),
        ("job_status", {"job_id": str(uuid.uuid4())}),
    ]
    for tool, args in calls:
        refused = call_tool(served, tenant.query_key, tool, **args)
        problem = assert_tool_problem(refused, 403, "forbidden")
        assert problem["detail"] == "this action needs the 'write' scope"
    listed = served.client.get(
        "/v1/namespaces/docs/documents", headers=served.headers(tenant.query_key)
    ).json()
    assert listed["total"] == 1  # nothing was added


def test_tool_calls_count_against_the_keys_budget_and_usage(served: Served, tenant: Tenant) -> None:
    key = make_key(served, tenant, scopes=["query"], quotas={"requests_per_minute": 3})
    call = {"name": "search", "arguments": {"namespace": "docs", "query": "otters"}}
    raw = httpx.post(
        served.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call},
        headers={
            "Authorization": f"Bearer {key['key']}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert raw.status_code == 200, raw.text
    assert (raw.headers["ratelimit-limit"], raw.headers["ratelimit-remaining"]) == ("3", "2")

    async def calls(client: Client) -> list[CallToolResult]:
        return [
            await client.call_tool("search", {"namespace": "docs", "query": "otters"})
            for _ in range(3)
        ]

    results = mcp_session(served, key["key"], calls)
    assert [r.is_error for r in results] == [False, False, True]
    problem = assert_tool_problem(results[2], 429, "rate-limited")
    assert problem["retry_after_s"] >= 1
    over_http = served.client.get("/v1/namespaces", headers=served.headers(key["key"]))
    assert over_http.status_code == 429  # one budget, whichever door
    assert re.sub(r"\d+(\.\d+)?", "N", over_http.json()["detail"]) == re.sub(
        r"\d+(\.\d+)?", "N", problem["detail"]
    )

    usage = served.client.get(
        f"/v1/admin/tenants/{tenant.id}/usage", headers=served.headers(tenant.admin_key)
    ).json()
    assert {u["key_id"]: u["requests"] for u in usage}[key["id"]] == 3
    metrics = served.client.get("/metrics").text
    assert 'shoal_mcp_tool_calls_total{outcome="rate-limited",tool="search"}' in metrics
    assert re.search(r'shoal_http_request_duration_seconds_count\{door="mcp"', metrics)


def test_only_allowed_hosts_are_answered(served: Served, tenant: Tenant) -> None:
    answer = httpx.post(
        served.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={
            "Host": "attacker.example",
            "Authorization": f"Bearer {tenant.query_key}",
            "Accept": "application/json, text/event-stream",
        },
    )
    assert answer.status_code == 421


def test_other_hosts_are_answered_when_allowed(tmp_path: Path) -> None:
    with serve_shoal(
        tmp_path,
        f"sqlite:///{tmp_path / 'shoal.db'}",
        SHOAL_MCP__ALLOWED_HOSTS='["shoal.example.com:*"]',
    ) as served:
        tenant = make_tenant(served, "acme")
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {
            "Authorization": f"Bearer {tenant.query_key}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        }
        port = served.url.rsplit(":", 1)[1]
        named = httpx.post(
            served.url + "/mcp", json=body, headers={**headers, "Host": f"shoal.example.com:{port}"}
        )
        local = httpx.post(served.url + "/mcp", json=body, headers=headers)
    assert named.status_code == 200, named.text
    assert local.status_code == 421
