"""Rate limits through the API, in process (TestClient: ASGI calls, no socket): requests per
minute per tenant and per key, 429s whose Retry-After is computed, RateLimit-* headers on every
answer, quotas set through the admin API, budgets shared by replicas through Redis (and split
between them when Redis is down), and token budgets that concurrent answers from a real model
cannot overspend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.api.conftest import (
    Tenant,
    assert_problem,
    make_namespace,
    make_tenant,
    upload,
    wait_for_job,
)
from tests.api.test_generation import OTTERS, openai_route
from tests.conftest import Api, RedisScratch, free_port, start_api


def set_quotas(api: Api, tenant: Tenant, **quotas: int | None) -> None:
    response = api.client.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"quotas": quotas}, headers=api.headers()
    )
    assert response.status_code == 200, response.text


def list_namespaces(api: Api, key: str) -> Any:
    return api.client.get("/v1/namespaces", headers=api.headers(key))


def test_requests_over_the_tenant_quota_get_a_429_with_a_computed_retry_after(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    set_quotas(api, tenant, requests_per_minute=3)

    answers = [list_namespaces(api, tenant.query_key) for _ in range(4)]

    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert {r.headers["RateLimit-Limit"] for r in answers} == {"3"}
    body = assert_problem(answers[3], 429, "rate-limited")
    assert "tenant's requests_per_minute quota of 3" in body["detail"]
    # 3 a minute refill one every 20 s: when the next request can pass, not a constant.
    assert answers[3].headers["Retry-After"] == "20"
    assert answers[3].headers["RateLimit-Remaining"] == "0"
    assert int(answers[3].headers["RateLimit-Reset"]) == 60


def test_rejections_are_counted_per_tenant_key_and_day_in_the_usage(api: Api) -> None:
    tenant, other = make_tenant(api, "acme"), make_tenant(api, "globex")
    set_quotas(api, tenant, requests_per_minute=2)
    statuses = [list_namespaces(api, tenant.query_key).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    assert list_namespaces(api, other.query_key).status_code == 200

    rows = api.client.get(f"/v1/admin/tenants/{tenant.id}/usage", headers=api.headers()).json()
    assert [(r["key_id"], r["rejected"], r["requests"]) for r in rows] == [
        (tenant.query_key.split("_")[1], 3, 0)  # listing is no query: only the refusals count
    ]
    assert rows[0]["day"] == dt.datetime.now(dt.UTC).date().isoformat()
    theirs = api.client.get(f"/v1/admin/tenants/{other.id}/usage", headers=api.headers()).json()
    assert theirs == []


def test_the_retry_after_follows_the_quota(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    set_quotas(api, tenant, requests_per_minute=12)
    statuses = [list_namespaces(api, tenant.write_key) for _ in range(13)]
    assert statuses[-1].status_code == 429
    assert statuses[-1].headers["Retry-After"] == "5"


def test_every_key_of_a_tenant_draws_from_the_tenants_budget(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    set_quotas(api, tenant, requests_per_minute=4)

    for key in (tenant.admin_key, tenant.write_key, tenant.query_key, tenant.admin_key):
        assert list_namespaces(api, key).status_code == 200
    assert_problem(list_namespaces(api, tenant.write_key), 429, "rate-limited")
    other = make_tenant(api, "globex")
    assert list_namespaces(api, other.query_key).status_code == 200  # its own budget


def test_a_key_quota_applies_on_top_of_its_tenants(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    created = api.client.post(
        f"/v1/admin/tenants/{tenant.id}/keys",
        json={"name": "batch", "scopes": ["query"], "quotas": {"requests_per_minute": 2}},
        headers=api.headers(tenant.admin_key),
    )
    assert created.status_code == 201, created.text
    assert created.json()["quotas"] == {"requests_per_minute": 2}
    batch = created.json()["key"]

    assert [list_namespaces(api, batch).status_code for _ in range(3)] == [200, 200, 429]
    assert list_namespaces(api, tenant.query_key).status_code == 200  # another key: free

    # The tenant's admin lifts the key's quota: the next request passes.
    lifted = api.client.patch(
        f"/v1/admin/keys/{created.json()['id']}",
        json={"quotas": {"requests_per_minute": None}},
        headers=api.headers(tenant.admin_key),
    )
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["quotas"] == {}
    assert list_namespaces(api, batch).status_code == 200


def test_a_raised_quota_applies_to_the_next_request(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    set_quotas(api, tenant, requests_per_minute=1)
    assert list_namespaces(api, tenant.query_key).status_code == 200
    assert list_namespaces(api, tenant.query_key).status_code == 429

    set_quotas(api, tenant, requests_per_minute=100)

    passed = list_namespaces(api, tenant.query_key)
    assert passed.status_code == 200
    assert int(passed.headers["RateLimit-Remaining"]) >= 97


def test_only_admins_manage_key_quotas_and_only_their_own_tenants(api: Api) -> None:
    acme, globex = make_tenant(api, "acme"), make_tenant(api, "globex")
    keys = api.client.get(f"/v1/admin/tenants/{acme.id}/keys", headers=api.headers()).json()
    key_id = keys[0]["id"]
    body = {"quotas": {"requests_per_minute": 5}}

    denied = api.client.patch(
        f"/v1/admin/keys/{key_id}", json=body, headers=api.headers(acme.query_key)
    )
    assert_problem(denied, 403, "forbidden")
    foreign = api.client.patch(
        f"/v1/admin/keys/{key_id}", json=body, headers=api.headers(globex.admin_key)
    )
    missing = api.client.patch(
        "/v1/admin/keys/0123456789abcdef", json=body, headers=api.headers(globex.admin_key)
    )
    assert assert_problem(foreign, 404, "not-found")["title"] == missing.json()["title"]
    assert_problem(missing, 404, "not-found")
    bad = api.client.patch(
        f"/v1/admin/keys/{key_id}",
        json={"quotas": {"requests_per_minute": 0}},
        headers=api.headers(),
    )
    assert_problem(bad, 422, "validation-error")


def test_platform_keys_are_not_limited_and_carry_no_headers(api: Api) -> None:
    response = api.client.get("/v1/admin/tenants", headers=api.headers())
    assert response.status_code == 200
    assert "RateLimit-Limit" not in response.headers


def test_the_x_api_key_header_authenticates_too(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    response = api.client.get("/v1/namespaces", headers={"X-API-Key": tenant.query_key})
    assert response.status_code == 200
    wrong = api.client.get("/v1/namespaces", headers={"X-API-Key": "shoal_abc_def"})
    assert_problem(wrong, 401, "unauthenticated")


@pytest.fixture
def replicas(
    tmp_path: Path, sqlite_url: str, embedder: Any, redis_scratch: RedisScratch
) -> Iterator[tuple[Api, Api]]:
    """Two API replicas: one database, one Redis, each its own process state."""
    settings: dict[str, Any] = {
        "database_url": sqlite_url,
        "redis_url": redis_scratch.url,
        "limits": {"key_prefix": redis_scratch.prefix, "replicas": 2},
        "cache": {"key_prefix": redis_scratch.prefix + "cache:"},
    }
    first = start_api(Settings(data_dir=tmp_path / "a", **settings), embedder)
    second = start_api(Settings(data_dir=tmp_path / "b", **settings), embedder)
    yield next(first), next(second)
    for replica in (first, second):
        next(replica, None)


def test_replicas_share_one_budget_through_redis(replicas: tuple[Api, Api]) -> None:
    a, b = replicas
    tenant = make_tenant(a, "acme")
    set_quotas(a, tenant, requests_per_minute=4)

    statuses = [list_namespaces(api, tenant.query_key).status_code for api in (a, b, a, b, b)]

    # Four in all, whichever replica served them: a limit is not multiplied by the replicas.
    assert statuses == [200, 200, 200, 200, 429]


def test_with_redis_down_each_replica_keeps_its_share_of_the_budget(
    tmp_path: Path, sqlite_url: str, embedder: Any
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        redis_url=dead,
        limits={"replicas": 2, "redis_timeout_s": 0.1},
        cache={"redis_timeout_s": 0.1, "redis_connect_timeout_s": 0.1},
    )
    for api in start_api(settings, embedder):
        tenant = make_tenant(api, "acme")
        set_quotas(api, tenant, requests_per_minute=6)
        statuses = [list_namespaces(api, tenant.query_key).status_code for _ in range(4)]
        # Fail-open: 6 a minute between 2 replicas is 3 here, never the whole 6 per replica.
        assert statuses == [200, 200, 200, 429]
        metrics = api.client.get("/metrics").text
        assert 'shoal_rate_limit_backend{backend="local"} 1.0' in metrics
        assert 'shoal_rate_limit_fallbacks_total{mode="open"}' in metrics


def test_with_redis_down_a_fail_closed_deployment_answers_503(
    tmp_path: Path, sqlite_url: str, embedder: Any
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        limits={"redis_failure": "closed", "redis_timeout_s": 0.1},
    )
    for api in start_api(settings, embedder):
        tenant = make_tenant(api, "acme")
        set_quotas(api, tenant, requests_per_minute=6)
        refused = list_namespaces(api, tenant.query_key)
        assert_problem(refused, 503, "limiter-unavailable")
        assert int(refused.headers["Retry-After"]) >= 1
        # Platform keys have no budget to check: operators can still act.
        assert api.client.get("/v1/admin/tenants", headers=api.headers()).status_code == 200


@pytest.fixture
def llm_api(tmp_path: Path, sqlite_url: str, embedder: Any, llama_server: str) -> Iterator[Api]:
    generators = {"llama": openai_route(llama_server, max_output_tokens=32)}
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, generators=generators)
    yield from start_api(settings, embedder)


@pytest.mark.slow
def test_concurrent_answers_never_spend_more_than_the_token_budget(llm_api: Api) -> None:
    api, budget = llm_api, 1200
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", routes={"small": "llama"})
    accepted = upload(api, tenant, "docs", [{"text": OTTERS, "filename": "otters.txt"}])
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    set_quotas(api, tenant, tokens_per_minute=budget)

    def ask(n: int) -> Any:
        return api.client.post(
            "/v1/namespaces/docs/query",
            json={"question": f"Why do sea otters hold hands? ({n})", "route": "small"},
            headers=api.headers(tenant.query_key),
        )

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))

    served = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(served) + len(refused) == 12, [r.text for r in answers]
    spent = sum(sum(r.json()["usage"].values()) for r in served)
    assert served, "the budget covers some answers"
    assert refused, "twelve answers at once need more than the budget"
    assert all(r.json()["route"]["name"] == "small" for r in served)
    assert spent <= budget
    for response in refused:
        body = assert_problem(response, 429, "rate-limited")
        assert "tokens_per_minute" in body["detail"]
        assert int(response.headers["Retry-After"]) >= 1
    # Usage for admins: every request counted, tokens as the answers reported them.
    usage = api.client.get(f"/v1/admin/tenants/{tenant.id}/usage", headers=api.headers()).json()
    assert sum(row["prompt_tokens"] + row["completion_tokens"] for row in usage) == spent
    assert sum(row["requests"] for row in usage) == len(served)
