"""Questions answered with citations, or plainly not answered."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_problem, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api

CORPUS = [
    {
        "filename": "otters.txt",
        "text": "Sea otters are marine mammals of the North Pacific. Sea otters hold hands while "
        "they sleep so that they do not drift apart. They use rocks as tools to open shellfish.",
    },
    {
        "filename": "etna.md",
        "text": "# Mount Etna\n\nMount Etna is a volcano on the east coast of Sicily. It is the "
        "most active volcano in Europe.\n\n## History\n\nIts eruptions are recorded since 1500 BC.",
    },
    {
        "filename": "tea.txt",
        "text": "Green tea is made from leaves that are not oxidised. Black tea leaves are fully "
        "oxidised before drying, which darkens them.",
    },
]


@pytest.fixture
def answered(api: Api):
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    accepted = upload(api, tenant, "docs", CORPUS)
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    ids = {d["filename"]: d["id"] for d in accepted["documents"]}
    return api, tenant, ids


def ask(api: Api, key: str, question: str, ns: str = "docs", **extra):
    return api.client.post(
        f"/v1/namespaces/{ns}/query", json={"question": question, **extra}, headers=api.headers(key)
    )


@pytest.mark.slow
def test_answer_quotes_the_right_document_and_names_chunk_text_and_score(answered) -> None:
    api, tenant, ids = answered
    response = ask(api, tenant.query_key, "Why do sea otters hold hands when sleeping?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answerable"] is True
    assert body["degraded"] is False
    assert body["route"]["name"] == "extractive"
    quoting = [c for c in body["citations"] if "hold hands" in c["text"]]
    assert quoting, body
    cited = quoting[0]
    assert cited["document_id"] == ids["otters.txt"]
    assert cited["filename"] == "otters.txt"
    assert cited["chunk_id"]
    assert 0 < cited["score"] <= 1
    assert "hold hands" in body["answer"]
    marker = body["citations"].index(cited) + 1
    assert f"[{marker}]" in body["answer"]
    assert {"embed", "search", "generate", "total"} <= body["timings_ms"].keys()


@pytest.mark.slow
def test_unrelated_question_is_not_answered(answered) -> None:
    api, tenant, _ = answered
    body = ask(api, tenant.query_key, "What is the capital city of Australia?").json()
    assert body["answerable"] is False
    assert body["citations"] == []
    assert "do not contain" in body["answer"]


@pytest.mark.slow
def test_a_deleted_document_is_never_cited(answered) -> None:
    api, tenant, ids = answered
    api.client.delete(
        f"/v1/namespaces/docs/documents/{ids['otters.txt']}", headers=api.headers(tenant.write_key)
    )
    body = ask(api, tenant.query_key, "Why do sea otters hold hands when sleeping?").json()
    assert ids["otters.txt"] not in {c["document_id"] for c in body["citations"]}


@pytest.mark.slow
def test_queries_never_see_another_tenants_documents(answered) -> None:
    api, _, _ = answered
    other = make_tenant(api, "other")
    make_namespace(api, other, "docs")
    body = ask(api, other.query_key, "Why do sea otters hold hands when sleeping?").json()
    assert body["citations"] == []
    assert body["answerable"] is False
    missing = ask(api, other.query_key, "otters?", ns="nothing")
    assert_problem(missing, 404, "not-found")


def test_query_needs_the_query_scope_and_a_question(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    assert_problem(ask(api, tenant.write_key, "hello?"), 403, "forbidden")
    assert_problem(ask(api, tenant.query_key, ""), 422, "validation-error")
    assert_problem(ask(api, tenant.query_key, "hi", top_k=0), 422, "validation-error")
    problem = assert_problem(
        ask(api, tenant.query_key, "hi", filter={"year": 1}), 422, "invalid-request"
    )
    assert problem["field"] == "filter"
    assert ask(api, tenant.admin_key, "hello?").status_code == 200
