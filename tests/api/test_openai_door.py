"""The OpenAI door (``/v1/openai``) with the official ``openai`` client against ``shoal serve``
over real HTTP: answers as ``/query`` gives them (plain, streamed, abstaining, degraded while the
store's breaker is open), models, embeddings in both formats, and OpenAI's typed errors for a bad
key, another tenant's namespace and a spent budget.

One server for the module (its model takes up to a minute to warm up on 2 cores), fault drills
mounted; the breaker test clears its drill and runs last.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from ingestion.embedder import ModelEmbedder
from retrieval.cache import normalise_query
from tests.api.conftest import Tenant, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Served, serve_shoal

pytestmark = pytest.mark.slow

OTTERS = {
    "filename": "otters.txt",
    "text": "Sea otters hold hands while they sleep so that they do not drift apart on the water. "
    "A group of resting otters is called a raft.",
}
QUESTION = "What is a group of resting sea otters called?"
EARLIER = "Which volcano is the most active in Europe?"
OFF_TOPIC = "How long should I knead bread dough by hand?"
RESET_S = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp("openai-door")
    with serve_shoal(
        data_dir,
        f"sqlite:///{data_dir / 'shoal.db'}",
        SHOAL_ENABLE_FAULTS="true",
        SHOAL_BREAKER_FAILURE_THRESHOLD="2",
        SHOAL_BREAKER_RESET_S=str(RESET_S),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def acme(served: Served) -> Tenant:
    """A tenant whose ``docs`` namespace holds the otters."""
    tenant = make_tenant(served, "acme")
    make_namespace(served, tenant, "docs")
    accepted = upload(served, tenant, "docs", [OTTERS])
    assert wait_for_job(served, tenant, accepted["job_id"])["state"] == "succeeded"
    return tenant


# One client per key, as an application holds one; closed with the module's server.
CLIENTS: dict[tuple[str, str], openai.OpenAI] = {}


@pytest.fixture(scope="module", autouse=True)
def close_clients() -> Iterator[None]:
    yield
    for made in CLIENTS.values():
        made.close()
    CLIENTS.clear()


def client(served: Served, key: str) -> openai.OpenAI:
    """The official client on the door, as its README example makes it. No retries: a 429 or
    503 must reach the test, not be waited out by the client."""
    if (served.url, key) not in CLIENTS:
        CLIENTS[served.url, key] = openai.OpenAI(
            base_url=f"{served.url}/v1/openai", api_key=key, max_retries=0, timeout=240
        )
    return CLIENTS[served.url, key]


def ask(served: Served, key: str, question: str = QUESTION, **extra: Any) -> Any:
    """``/v1/namespaces/docs/query``, the answer the door must give."""
    response = served.client.post(
        "/v1/namespaces/docs/query",
        json={"question": question, **extra},
        headers=served.headers(key),
    )
    assert response.status_code == 200, response.text
    return response


def extras(model: Any) -> dict[str, Any]:
    """The platform's fields on a message or a chunk's delta."""
    fields = model.model_dump()
    keys = ("answerable", "abstain_reason", "citations", "route", "degraded", "degraded_reason")
    return {key: fields[key] for key in keys}


def expected_extras(query: dict[str, Any]) -> dict[str, Any]:
    keys = ("answerable", "abstain_reason", "citations", "route", "degraded", "degraded_reason")
    return {key: query[key] for key in keys}


def stream_chunks(served: Served, key: str, **request: Any) -> list[Any]:
    with client(served, key).chat.completions.create(stream=True, **request) as stream:
        return list(stream)


def test_a_chat_completion_is_the_namespaces_cited_answer(served: Served, acme: Tenant) -> None:
    query = ask(served, acme.query_key)
    messages: list[Any] = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": EARLIER},
        {"role": "assistant", "content": "Mount Etna."},
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]

    raw = client(served, acme.query_key).chat.completions.with_raw_response.create(
        model="docs", messages=messages
    )
    completion = raw.parse()

    body = query.json()
    assert completion.object == "chat.completion"
    assert completion.model == "docs"
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    # Earlier turns and the system message change nothing: the last question is asked alone.
    assert choice.message.content == body["answer"]
    assert extras(choice.message) == expected_extras(body)
    assert body["answerable"] is True
    assert {c["filename"] for c in body["citations"]} == {"otters.txt"}
    assert "[1]" in (choice.message.content or "")
    usage = body["usage"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == usage["prompt_tokens"]
    assert completion.usage.completion_tokens == usage["completion_tokens"]
    assert completion.usage.total_tokens == usage["prompt_tokens"] + usage["completion_tokens"]
    for header in ("X-Shoal-Route", "X-Shoal-Route-Reason"):
        assert raw.headers[header] == query.headers[header]


def test_a_route_asked_for_in_the_model_name_is_the_route_requested(
    served: Served, acme: Tenant
) -> None:
    query = ask(served, acme.query_key, route="large").json()
    completion = client(served, acme.query_key).chat.completions.create(
        model="docs:large", messages=[{"role": "user", "content": QUESTION}]
    )
    route = extras(completion.choices[0].message)["route"]
    assert route == query["route"]
    assert route["reason"].startswith("requested: large")
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client(served, acme.query_key).chat.completions.create(
            model="docs:huge", messages=[{"role": "user", "content": QUESTION}]
        )
    assert refused.value.body["param"] == "model"  # type: ignore[index]


def test_a_streamed_answer_reassembles_with_citations_on_the_last_chunk(
    served: Served, acme: Tenant
) -> None:
    body = ask(served, acme.query_key).json()
    request: dict[str, Any] = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}]}

    chunks = stream_chunks(served, acme.query_key, **request)

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == body["answer"]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert extras(last.choices[0].delta) == expected_extras(body)
    assert last.usage is not None
    assert last.usage.total_tokens == sum(body["usage"].values())

    # With include_usage, the usage comes as OpenAI sends it: a last chunk with no choices.
    chunks = stream_chunks(
        served, acme.query_key, stream_options={"include_usage": True}, **request
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert extras(chunks[-2].choices[0].delta)["citations"] == body["citations"]
    assert chunks[-2].usage is None

    # On the wire: Server-Sent Events of chunks, closed by [DONE].
    with served.client.stream(
        "POST",
        "/v1/openai/chat/completions",
        json={**request, "stream": True},
        headers=served.headers(acme.query_key),
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["X-Shoal-Route"] == body["route"]["name"]
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert [json.loads(d)["object"] for d in data[:-1]] == ["chat.completion.chunk"] * (
        len(data) - 1
    )


def test_a_question_the_documents_do_not_answer_abstains(served: Served, acme: Tenant) -> None:
    request: dict[str, Any] = {
        "model": "docs",
        "messages": [{"role": "user", "content": OFF_TOPIC}],
    }
    completion = client(served, acme.query_key).chat.completions.create(**request)

    fields = extras(completion.choices[0].message)
    assert fields["answerable"] is False
    assert fields["abstain_reason"] == "weak_evidence"
    assert fields["citations"] == []
    assert fields["route"]["name"] == "none"
    assert (
        completion.choices[0].message.content
        == ask(served, acme.query_key, OFF_TOPIC).json()["answer"]
    )
    last = stream_chunks(served, acme.query_key, **request)[-1]
    assert extras(last.choices[0].delta) == fields


def test_models_are_the_tenants_namespaces(served: Served, acme: Tenant) -> None:
    other = make_tenant(served, "globex")
    make_namespace(served, other, "hidden")
    make_namespace(served, acme, "spare")

    models = client(served, acme.query_key).models.list()

    assert [m.id for m in models.data] == ["docs", "spare"]
    assert {m.object for m in models.data} == {"model"}
    assert client(served, acme.query_key).models.retrieve("docs").id == "docs"
    with pytest.raises(openai.NotFoundError):
        client(served, acme.query_key).models.retrieve("hidden")


def test_embeddings_in_both_formats_are_the_models_vectors(
    served: Served, acme: Tenant, embedder: ModelEmbedder
) -> None:
    texts = ["Sea otters  sleep in rafts.", "Mount Etna erupts often."]
    door = client(served, acme.query_key)

    decoded = door.embeddings.create(model="docs", input=texts)  # base64, decoded by the client
    floats = door.embeddings.create(model="docs", input=texts, encoding_format="float")
    raw = door.embeddings.create(model="docs", input=texts, encoding_format="base64")

    expected = embedder.encode([normalise_query(t) for t in texts])
    for i, vector in enumerate(expected):
        assert floats.data[i].index == i
        assert len(floats.data[i].embedding) == embedder.dimension
        assert decoded.data[i].embedding == floats.data[i].embedding
        little_endian = np.frombuffer(base64.b64decode(raw.data[i].embedding), dtype="<f4")  # type: ignore[arg-type]
        assert little_endian.tolist() == floats.data[i].embedding
        assert np.allclose(floats.data[i].embedding, vector, atol=1e-5)
    tokens = sum(embedder.count_tokens(normalise_query(t)) for t in texts)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    single = door.embeddings.create(model="docs", input=texts[0], encoding_format="float")
    assert single.data[0].embedding == floats.data[0].embedding

    with pytest.raises(openai.UnprocessableEntityError) as too_long:
        door.embeddings.create(model="docs", input=["otters", "word " * 400])
    assert too_long.value.body["param"] == "input[1]"  # type: ignore[index]
    assert "reads at most 256" in too_long.value.message


def test_a_bad_key_is_an_authentication_error_and_a_missing_scope_a_permission_one(
    served: Served, acme: Tenant
) -> None:
    with pytest.raises(openai.AuthenticationError) as bad:
        client(served, "shoal_0000_nope").models.list()
    assert bad.value.status_code == 401
    assert bad.value.body == {  # OpenAI's shape, with Shoal's problem slug as the code
        "message": "invalid or revoked API key",
        "type": "authentication_error",
        "code": "unauthenticated",
        "param": None,
    }
    assert bad.value.response.headers["WWW-Authenticate"] == "Bearer"
    with pytest.raises(openai.PermissionDeniedError):
        client(served, acme.write_key).chat.completions.create(
            model="docs", messages=[{"role": "user", "content": QUESTION}]
        )


def test_another_tenants_namespace_is_a_404_identical_to_a_missing_one(
    served: Served, acme: Tenant
) -> None:
    owner = make_tenant(served, "initech")
    make_namespace(served, owner, "secret")
    door = client(served, acme.query_key)
    calls: dict[str, Callable[[], object]] = {
        "chat": lambda: door.chat.completions.create(
            model="secret", messages=[{"role": "user", "content": QUESTION}]
        ),
        "embeddings": lambda: door.embeddings.create(model="secret", input="otters"),
        "model": lambda: door.models.retrieve("secret"),
    }

    def refusals() -> dict[str, tuple[int, Any]]:
        found: dict[str, tuple[int, Any]] = {}
        for name, call in calls.items():
            with pytest.raises(openai.NotFoundError) as refused:
                call()
            found[name] = (refused.value.status_code, refused.value.body)
        return found

    theirs = refusals()
    deleted = served.client.delete("/v1/namespaces/secret", headers=served.headers(owner.admin_key))
    assert deleted.status_code == 204
    missing = refusals()

    assert theirs == missing
    assert theirs["chat"] == (
        404,
        {
            "message": "namespace 'secret' not found",
            "type": "not_found_error",
            "code": "not-found",
            "param": None,
        },
    )


def test_a_spent_budget_is_a_rate_limit_error_with_retry_after(served: Served) -> None:
    tenant = make_tenant(served, "hooli")
    make_namespace(served, tenant, "docs")
    quotas = {"requests_per_minute": 3, "tokens_per_minute": 30}
    patched = served.client.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"quotas": quotas}, headers=served.headers()
    )
    assert patched.status_code == 200, patched.text
    door = client(served, tenant.query_key)

    # Tokens are reserved before the model runs: 14 of 30 spent, 28 more do not fit now.
    text = "Sea otters hold hands while they sleep on the water."
    first = door.embeddings.create(model="docs", input=text)
    assert first.usage.prompt_tokens == 14
    with pytest.raises(openai.RateLimitError) as tokens:
        door.embeddings.create(model="docs", input=[text, text])
    assert tokens.value.body["code"] == "rate-limited"  # type: ignore[index]
    assert "tokens_per_minute quota of 30" in tokens.value.message
    # 12 tokens short at 30 a minute: about 24 s (a few ms have refilled since).
    assert 20 <= int(tokens.value.response.headers["Retry-After"]) <= 24

    # Requests: both calls above counted; the third of three a minute passes, the fourth not.
    door.models.list()
    with pytest.raises(openai.RateLimitError) as requests:
        door.models.list()
    assert "requests_per_minute quota of 3" in requests.value.message
    assert 1 <= int(requests.value.response.headers["Retry-After"]) <= 20  # one per 20 s
    assert requests.value.response.headers["RateLimit-Remaining"] == "0"


def test_while_the_store_breaker_is_open_answers_are_degraded(served: Served, acme: Tenant) -> None:
    door = client(served, acme.query_key)
    request: dict[str, Any] = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}]}
    full = door.chat.completions.create(**request).choices[0].message
    drill = served.client.post(
        "/v1/admin/faults",
        json={"target": "vector_store", "mode": "error"},
        headers=served.headers(),
    )
    assert drill.status_code == 201, drill.text
    try:
        for _ in range(2):  # the threshold: each fails, and is answered from the cache
            door.chat.completions.create(**request)

        raw = door.chat.completions.with_raw_response.create(**request)
        cached = raw.parse().choices[0].message
        fields = extras(cached)
        assert fields["degraded"] is True
        assert "circuit breaker is open" in fields["degraded_reason"]
        assert cached.content == full.content
        assert fields["citations"] == extras(full)["citations"]
        assert fields["route"]["reason"].startswith("cached answer")
        assert 1 <= int(raw.headers["Retry-After"]) <= RESET_S

        never_asked: dict[str, Any] = {
            **request,
            "messages": [{"role": "user", "content": "Why do otters?"}],
        }
        unanswered = door.chat.completions.create(**never_asked).choices[0].message
        assert extras(unanswered)["degraded"] is True
        assert extras(unanswered)["answerable"] is False
        assert "try again" in (unanswered.content or "")

        last = stream_chunks(served, acme.query_key, **request)[-1]
        assert extras(last.choices[0].delta)["degraded"] is True

        # The embedding model still answers: embeddings need no store.
        assert door.embeddings.create(model="docs", input="otters").data
    finally:
        assert served.client.delete("/v1/admin/faults", headers=served.headers()).status_code == 204
    time.sleep(RESET_S)  # the breaker half-opens; the next answer's search closes it
    recovered = door.chat.completions.create(**request).choices[0].message
    assert extras(recovered)["degraded"] is False
