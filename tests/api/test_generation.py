"""Answers through HTTP with every generation backend: routing (with its reason), fallbacks
large → small → extractive, and streaming, against llama.cpp's real OpenAI-compatible server
and the real local model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from retrieval.generation.prompt import shown_text
from tests.api.conftest import (
    Tenant,
    assert_problem,
    make_namespace,
    make_tenant,
    query_events,
    upload,
    wait_for_job,
)
from tests.conftest import SMOLLM2_GGUF, Api, free_port, start_api
from tests.llm import LlmRecorder, assert_cites_what_the_model_named, shown_passages

pytestmark = pytest.mark.slow

OTTERS = (
    "Sea otters hold hands while they sleep so that they do not drift apart on the water. "
    "A group of resting otters is called a raft."
)
# Beside the otters, in the citations tests: what else the model is shown, on other subjects.
OTHERS = [
    ("Harbour seals rest on sandbanks at low tide and dive for herring.", "seals.txt"),
    ("River otters dig dens in the banks of lakes and rivers.", "river.txt"),
]
FACTUAL = "What is a group of resting sea otters called?"
ANALYTICAL = "Why do sea otters hold hands while they sleep?"


def openai_route(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "openai",
        "endpoints": [{"url": url, "model": "smollm2"}],
        # Budgets are counted in cl100k tokens; SmolLM2's tokenizer needs ~14 % more, and the
        # server's window is 2048.
        "context_window": 1536,
        "max_output_tokens": 64,
        "timeout_s": 60,
        **extra,
    }


def dead_route() -> dict[str, Any]:
    return openai_route(f"http://127.0.0.1:{free_port()}/v1", timeout_s=2)


@pytest.fixture
def generators(llama_recorder: LlmRecorder, smollm2_dir: Path) -> dict[str, Any]:
    """The operator's catalog: llama.cpp's server (recorded), two dead endpoints and the local
    model."""
    return {
        "llama": openai_route(llama_recorder.url),
        "dead": dead_route(),
        "dead-too": dead_route(),
        "local": {
            "backend": "local",
            "model_path": str(smollm2_dir),
            "gguf_file": SMOLLM2_GGUF,
            "context_window": 1536,
            "max_output_tokens": 48,
        },
    }


@pytest.fixture
def llm_api(
    tmp_path: Path, sqlite_url: str, embedder: Any, generators: dict[str, Any]
) -> Iterator[Api]:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, generators=generators)
    yield from start_api(settings, embedder)


def setup(api: Api, routes: dict[str, Any], others: bool = False) -> Tenant:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", routes=routes)
    documents = [(OTTERS, "otters.txt"), *(OTHERS if others else [])]
    accepted = upload(api, tenant, "docs", [{"text": t, "filename": f} for t, f in documents])
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    return tenant


def assert_cites_what_it_wrote(recorder: LlmRecorder, answer: dict[str, Any]) -> None:
    """The answer's citations are the passages the model's recorded reply named, all it was
    shown when it named none (and then the answer carries no marker)."""
    exchange = recorder.only()
    assert_cites_what_the_model_named(
        exchange.reply,
        shown_passages(exchange.user)[0],
        answerable=answer["answerable"],
        answer_text=answer["answer"],
        cited=[shown_text(c["text"]) for c in answer["citations"]],
    )


def ask(api: Api, tenant: Tenant, question: str, **extra: Any):
    response = api.client.post(
        "/v1/namespaces/docs/query",
        json={"question": question, **extra},
        headers=api.headers(tenant.query_key),
    )
    assert response.status_code == 200, response.text
    return response


def test_the_small_route_answers_through_an_openai_compatible_server(
    llm_api: Api, llama_recorder: LlmRecorder
) -> None:
    api = llm_api
    tenant = setup(api, {"small": "llama", "large": "dead"}, others=True)

    response = ask(api, tenant, FACTUAL, route="small")

    body = response.json()
    assert body["route"] == {"name": "small", "reason": "requested: small"}
    assert response.headers["X-Shoal-Route"] == "small"
    assert body["answerable"] is True
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["completion_tokens"] > 0
    assert body["answer"].strip()
    assert_cites_what_it_wrote(llama_recorder, body)
    assert len(shown_passages(llama_recorder.only().user)[0]) == 3  # the others were shown too


def test_a_failing_large_route_falls_back_to_small_and_says_why(llm_api: Api) -> None:
    api = llm_api
    tenant = setup(api, {"small": "llama", "large": "dead"})

    body = ask(api, tenant, ANALYTICAL).json()

    assert body["route"]["name"] == "small"
    reason = body["route"]["reason"]
    assert reason.startswith("auto: ")
    assert "analytical question" in reason  # why auto chose large
    assert "fell back after large (openai:smollm2) failed" in reason
    metrics = api.client.get("/metrics").text
    assert 'shoal_route_decisions_total{decided_by="auto",fallback="true",route="small"}' in metrics


def test_when_every_llm_route_fails_the_answer_is_extractive(llm_api: Api) -> None:
    api = llm_api
    tenant = setup(api, {"small": "dead-too", "large": "dead"})

    response = ask(api, tenant, ANALYTICAL)

    body = response.json()
    assert body["route"]["name"] == "extractive"
    assert (
        "fell back after large (openai:smollm2), small (openai:smollm2)" in body["route"]["reason"]
    )
    assert response.headers["X-Shoal-Route"] == "extractive"
    assert body["answerable"] is True
    assert "hold hands" in body["answer"]


def test_without_routes_a_factual_question_is_answered_by_quoting(api: Api) -> None:
    tenant = setup(api, {})
    body = ask(api, tenant, FACTUAL).json()
    assert body["route"]["name"] == "extractive"
    assert "no LLM route is configured" in body["route"]["reason"]


def read_events(api: Api, tenant: Tenant, question: str, **extra: Any) -> list[tuple[str, Any]]:
    return query_events(api, tenant, question, **extra)[1]


def test_streaming_sends_tokens_then_citations_then_usage_and_timings(
    llm_api: Api, llama_recorder: LlmRecorder
) -> None:
    api = llm_api
    tenant = setup(api, {"small": "llama"}, others=True)

    events = read_events(api, tenant, FACTUAL, route="small")

    names = [name for name, _ in events]
    assert names[0] == "route"
    assert names[-2:] == ["citations", "done"]
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) >= 2
    done = events[-1][1]
    assert "".join(tokens) == done["answer"]
    assert done["route"]["name"] == "small"
    assert done["usage"]["completion_tokens"] > 0
    assert 0 < done["timings_ms"]["first_token"] <= done["timings_ms"]["total"]
    assert_cites_what_it_wrote(llama_recorder, {**done, **events[-2][1]})
    assert "shoal_time_to_first_token_seconds_count" in api.client.get("/metrics").text


def test_a_streamed_extractive_answer_has_the_same_shape(api: Api) -> None:
    tenant = setup(api, {})
    events = read_events(api, tenant, FACTUAL)
    assert [name for name, _ in events] == ["route", "token", "citations", "done"]
    assert events[1][1]["text"] == events[-1][1]["answer"]


def test_the_local_backend_answers_through_http(llm_api: Api) -> None:
    api = llm_api
    tenant = setup(api, {"small": "local"})

    body = ask(api, tenant, FACTUAL, route="small").json()

    assert body["route"]["name"] == "small"
    assert body["answerable"] is True
    assert body["usage"]["completion_tokens"] > 0
    assert body["citations"]


@pytest.mark.parametrize(
    ("routes", "field", "status", "slug"),
    [
        # Tenants pick generators by name; endpoints, key variables and paths are the
        # operator's (SHOAL_GENERATORS), so none of these can point the server anywhere.
        ({"small": "nonexistent"}, "routes.small", 422, "invalid-request"),
        (
            {"small": {"backend": "openai", "endpoints": [{"url": "http://evil", "model": "m"}]}},
            "routes.small",
            422,
            "validation-error",
        ),
        ({"large": "Not A Name"}, "routes.large", 422, "validation-error"),
        ({"medium": "llama"}, "routes.medium", 422, "validation-error"),
    ],
)
def test_a_route_must_name_a_configured_generator(
    llm_api: Api, routes: dict[str, Any], field: str, status: int, slug: str
) -> None:
    api = llm_api
    tenant = make_tenant(api, "acme")
    response = api.client.post(
        "/v1/namespaces",
        json={"name": "docs", "routes": routes},
        headers=api.headers(tenant.admin_key),
    )
    problem = assert_problem(response, status, slug)
    if slug == "invalid-request":
        assert problem["field"] == field
        assert "llama" in problem["detail"]  # the configured names are listed
    else:
        assert any(".".join(map(str, e["loc"])).endswith(field) for e in problem["errors"])


def test_the_servers_default_routes_serve_namespaces_without_their_own(
    tmp_path: Path, sqlite_url: str, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_GENERATORS", json.dumps({"dead": dead_route()}))
    monkeypatch.setenv("SHOAL_ROUTES", json.dumps({"small": "dead"}))
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url)
    assert settings.routes.small == "dead"
    for api in start_api(settings, embedder):
        tenant = setup(api, {})

        body = ask(api, tenant, FACTUAL).json()

        assert body["route"]["name"] == "extractive"
        assert "fell back after small (openai:smollm2) failed" in body["route"]["reason"]


def test_default_routes_must_name_configured_generators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_ROUTES", json.dumps({"small": "missing"}))
    with pytest.raises(ValueError, match="not in SHOAL_GENERATORS"):
        Settings(data_dir=tmp_path)


@pytest.mark.parametrize("url", ["http://[::1", "ftp://host/v1", "not a url", "http://:80/v1"])
def test_a_generator_url_must_be_http(tmp_path: Path, url: str) -> None:
    route = {"backend": "openai", "endpoints": [{"url": url, "model": "m"}]}
    with pytest.raises(ValueError, match="URL"):
        Settings(data_dir=tmp_path, generators={"g": route})
