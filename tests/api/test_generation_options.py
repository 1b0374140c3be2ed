"""A request's ``max_tokens`` and ``temperature`` reach the route's model, through
``/v1/namespaces/{ns}/query`` and through the OpenAI door with the official ``openai`` client:
llama.cpp's real server, behind a recorder that keeps each chat completion Shoal sent. The
request may lower the route's ``max_output_tokens``, never raise it; the token reservation and
the answer cache follow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.settings import Settings
from tests.api.conftest import Tenant, assert_problem, make_tenant, query_events
from tests.api.test_generation import FACTUAL, openai_route, setup
from tests.api.test_rate_limits import set_quotas
from tests.conftest import Api, start_api
from tests.llm import LlmRecorder

ROUTE_CAP = 64  # the llama generator's max_output_tokens


@pytest.fixture
def llm_api(
    tmp_path: Path, sqlite_url: str, embedder: Any, llama_recorder: LlmRecorder
) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        generators={"llama": openai_route(llama_recorder.url, max_output_tokens=ROUTE_CAP)},
        enable_faults=True,
    )
    yield from start_api(settings, embedder)


@pytest.fixture
def tenant(llm_api: Api) -> Tenant:
    return setup(llm_api, {"small": "llama"})


@pytest.fixture
def door(llm_api: Api, tenant: Tenant) -> openai.OpenAI:
    """The official client on the OpenAI door, over the app's own client (no retries; not
    closed here: that would close the app's client)."""
    return openai.OpenAI(
        base_url="http://testserver/v1/openai",
        api_key=tenant.query_key,
        http_client=llm_api.client,
        max_retries=0,
    )


def query(api: Api, tenant: Tenant, **extra: Any) -> Any:
    return api.client.post(
        "/v1/namespaces/docs/query",
        json={"question": FACTUAL, "route": "small", **extra},
        headers=api.headers(tenant.query_key),
    )


def sent(recorder: LlmRecorder) -> tuple[int, float]:
    """The ``max_tokens`` and ``temperature`` of the one chat completion Shoal sent; forgotten."""
    request = recorder.only().request
    recorder.exchanges.clear()
    return request["max_tokens"], request["temperature"]


@pytest.mark.slow
def test_query_options_reach_the_model_and_max_tokens_only_lowers_the_routes_cap(
    llm_api: Api, tenant: Tenant, llama_recorder: LlmRecorder
) -> None:
    body = query(llm_api, tenant, max_tokens=5, temperature=0.7).json()
    assert sent(llama_recorder) == (5, 0.7)
    assert body["route"]["name"] == "small"
    assert 0 < body["usage"]["completion_tokens"] <= 5

    query(llm_api, tenant, max_tokens=ROUTE_CAP * 10)
    assert sent(llama_recorder) == (ROUTE_CAP, 0)  # the operator's cap wins

    query(llm_api, tenant)
    assert sent(llama_recorder) == (ROUTE_CAP, 0)  # the route's own: temperature 0

    # Streamed, llama.cpp reports no usage and Shoal counts with cl100k: the request is the proof.
    query_events(llm_api, tenant, FACTUAL, route="small", max_tokens=7, temperature=1.2)
    assert sent(llama_recorder) == (7, 1.2)


@pytest.mark.slow
def test_openai_client_options_reach_the_model(
    door: openai.OpenAI, llama_recorder: LlmRecorder
) -> None:
    messages: Any = [{"role": "user", "content": FACTUAL}]

    completion = door.chat.completions.create(
        model="docs:small", messages=messages, max_tokens=5, temperature=0.7
    )
    assert sent(llama_recorder) == (5, 0.7)
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= 5

    door.chat.completions.create(
        model="docs:small", messages=messages, max_completion_tokens=ROUTE_CAP * 10
    )
    assert sent(llama_recorder) == (ROUTE_CAP, 0)

    door.chat.completions.create(
        model="docs:small", messages=messages, max_tokens=9, max_completion_tokens=6
    )
    assert sent(llama_recorder)[0] == 6  # both caps: the smaller

    with door.chat.completions.create(
        model="docs:small", messages=messages, max_tokens=7, temperature=1.2, stream=True
    ) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert sent(llama_recorder) == (7, 1.2)
    assert text


def needs(detail: str) -> int:
    """The tokens a refused request would have reserved, as the 429 says."""
    found = re.search(r"needs (\d+) tokens", detail)
    assert found, detail
    return int(found.group(1))


@pytest.mark.slow
def test_the_reservation_uses_the_smaller_cap(
    llm_api: Api, tenant: Tenant, door: openai.OpenAI, llama_recorder: LlmRecorder
) -> None:
    # A quota of one token refuses every LLM answer, saying what it would have reserved.
    set_quotas(llm_api, tenant, tokens_per_minute=1)

    full = needs(assert_problem(query(llm_api, tenant), 429, "rate-limited")["detail"])
    capped = query(llm_api, tenant, max_tokens=5)
    raised = query(llm_api, tenant, max_tokens=ROUTE_CAP * 10)
    with pytest.raises(openai.RateLimitError) as door_capped:
        door.chat.completions.create(
            model="docs:small", messages=[{"role": "user", "content": FACTUAL}], max_tokens=5
        )

    assert needs(assert_problem(capped, 429, "rate-limited")["detail"]) == full - ROUTE_CAP + 5
    assert needs(assert_problem(raised, 429, "rate-limited")["detail"]) == full
    assert needs(door_capped.value.message) == full - ROUTE_CAP + 5
    assert llama_recorder.exchanges == []  # refused before any model call


@pytest.mark.slow
def test_cached_answers_are_kept_apart_by_their_options(
    llm_api: Api, tenant: Tenant, llama_recorder: LlmRecorder
) -> None:
    short = query(llm_api, tenant, max_tokens=3).json()
    plain = query(llm_api, tenant).json()
    assert short["usage"]["completion_tokens"] <= 3 < plain["usage"]["completion_tokens"]
    assert short["answer"] != plain["answer"]
    response = llm_api.client.post(
        "/v1/admin/faults",
        json={"target": "vector_store", "mode": "error"},
        headers=llm_api.headers(),
    )
    assert response.status_code == 201, response.text

    served = {
        "short": query(llm_api, tenant, max_tokens=3).json(),
        "plain": query(llm_api, tenant).json(),
        "sampled": query(llm_api, tenant, temperature=0.9).json(),
    }

    assert all(body["degraded"] for body in served.values())
    assert served["short"]["answer"] == short["answer"]
    assert served["plain"]["answer"] == plain["answer"]
    # Never asked at that temperature: nothing cached, not the greedy answer.
    assert served["sampled"]["route"]["name"] == "none"
    assert served["sampled"]["answerable"] is False


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 0), ("max_tokens", 32_769), ("temperature", -0.1), ("temperature", 2.5)],
)
def test_options_out_of_bounds_are_a_422_naming_them(api: Api, field: str, value: float) -> None:
    tenant = make_tenant(api, "acme")
    response = query(api, tenant, **{field: value})
    problem = assert_problem(response, 422, "validation-error")
    assert [e["loc"][-1] for e in problem["errors"]] == [field]
