"""The evidence gate through the app's routes (in process): it runs before any backend, so a
question the documents cannot answer costs no model call and no token; it says why it abstained;
namespaces tune it or replace it with a plain ``min_score``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.api.conftest import (
    Tenant,
    make_namespace,
    make_tenant,
    query_events,
    upload,
    wait_for_job,
)
from tests.conftest import Api, start_api
from tests.llm import LlmRecorder

pytestmark = pytest.mark.slow

OTTERS = (
    "Sea otters hold hands while they sleep so that they do not drift apart on the water. "
    "A group of resting otters is called a raft. Otters eat sea urchins, crabs and clams."
)
ON_TOPIC = "What is a group of resting sea otters called?"
OFF_TOPIC = "How long should I knead bread dough by hand?"


def setup(api: Api, **namespace: Any) -> Tenant:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", **namespace)
    job = upload(api, tenant, "docs", [{"text": OTTERS, "filename": "otters.txt"}])
    assert wait_for_job(api, tenant, job["job_id"])["state"] == "succeeded"
    return tenant


def ask(api: Api, tenant: Tenant, question: str, **extra: Any) -> dict[str, Any]:
    response = api.client.post(
        "/v1/namespaces/docs/query",
        json={"question": question, **extra},
        headers=api.headers(tenant.query_key),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def llm_api(
    tmp_path: Path, sqlite_url: str, embedder: Any, llama_recorder: LlmRecorder
) -> Iterator[Api]:
    generators = {
        "llama": {
            "backend": "openai",
            "endpoints": [{"url": llama_recorder.url, "model": "smollm2"}],
            "context_window": 1536,
            "max_output_tokens": 32,
            "timeout_s": 60,
        }
    }
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, generators=generators)
    yield from start_api(settings, embedder)


def test_weak_evidence_abstains_before_the_model_is_called(
    llm_api: Api, llama_recorder: LlmRecorder
) -> None:
    tenant = setup(llm_api, routes={"small": "llama", "large": "llama"})

    body = ask(llm_api, tenant, OFF_TOPIC)

    assert (body["answerable"], body["abstain_reason"]) == (False, "weak_evidence")
    assert body["citations"] == []
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert body["route"]["name"] == "none"
    assert "abstained before generating" in body["route"]["reason"]
    assert llama_recorder.exchanges == []  # no model call, no token spent

    answered = ask(llm_api, tenant, ON_TOPIC, route="small")
    assert answered["route"]["name"] == "small"
    assert len(llama_recorder.exchanges) == 1  # the gate let this one through to the model
    if not answered["answerable"]:  # what the model says is the model's; Shoal names it
        assert answered["abstain_reason"] == "model_declined"


def test_an_answer_says_no_abstain_reason(api: Api) -> None:
    tenant = setup(api)
    body = ask(api, tenant, ON_TOPIC)
    assert (body["answerable"], body["abstain_reason"]) == (True, None)
    assert "raft" in body["answer"]


def test_a_namespace_min_score_replaces_the_gate(api: Api) -> None:
    tenant = setup(api, search={"min_score": 0.99})
    body = ask(api, tenant, ON_TOPIC)
    assert (body["answerable"], body["abstain_reason"]) == (False, "below_min_score")


def test_a_namespace_evidence_threshold_moves_the_bar(api: Api) -> None:
    tenant = setup(api, search={"evidence_threshold": 0.0})
    body = ask(api, tenant, OFF_TOPIC)
    # A bar of 0 never abstains on weak evidence: the extractive answer quotes what it has.
    assert body["answerable"] is True
    assert body["abstain_reason"] is None


def test_a_streamed_abstention_ends_with_its_reason(api: Api) -> None:
    tenant = setup(api)
    _, events = query_events(api, tenant, OFF_TOPIC)
    kinds = [kind for kind, _ in events]
    assert (kinds[0], kinds[-1]) == ("route", "done"), kinds
    done = events[-1][1]
    assert (done["answerable"], done["abstain_reason"]) == (False, "weak_evidence")
    assert done["route"]["name"] == "none"


def test_an_empty_namespace_says_the_search_found_nothing(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    body = ask(api, tenant, ON_TOPIC)
    assert (body["answerable"], body["abstain_reason"]) == (False, "no_passages")
