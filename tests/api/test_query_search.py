"""Queries through the API, in process (TestClient: ASGI calls, no socket): metadata filters,
search modes and per-namespace search settings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import (
    assert_problem,
    make_namespace,
    make_tenant,
    upload,
    wait_for_job,
)
from tests.conftest import Api

pytestmark = pytest.mark.slow

FIELDS = {"year": "integer", "kind": "keyword", "published": "datetime", "peer_reviewed": "bool"}
DOCS = [
    {
        "external_id": "otters-2019",
        "text": "Sea otters hold hands while sleeping so that they do not drift apart.",
        "metadata": {"year": 2019, "kind": "field-note", "published": "2019-03-02T10:00:00Z"},
    },
    {
        "external_id": "otters-2022",
        "text": "Sea otters wrap themselves in kelp and hold paws to keep together at night.",
        "metadata": {"year": 2022, "kind": "review", "peer_reviewed": True},
    },
    {
        "external_id": "volcano",
        "text": "The Zzyzx basalt flow cooled into hexagonal columns over several decades.",
        "metadata": {"year": 2020, "kind": "review", "published": "2020-07-01"},
    },
]


@pytest.fixture
def searchable(api: Api):
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", indexed_fields=FIELDS)
    accepted = upload(api, tenant, "docs", DOCS)
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    ids = {d["id"]: DOCS[i]["external_id"] for i, d in enumerate(accepted["documents"])}
    return api, tenant, ids


def ask(api: Api, key: str, question: str, **extra: Any):
    return api.client.post(
        "/v1/namespaces/docs/query", json={"question": question, **extra}, headers=api.headers(key)
    )


def cited(response, ids: dict[str, str]) -> set[str]:
    assert response.status_code == 200, response.text
    return {ids[c["document_id"]] for c in response.json()["citations"]}


QUESTION = "Why do sea otters hold hands when they sleep?"


@pytest.mark.parametrize(
    ("filter", "allowed"),
    [
        ({"field": "year", "eq": 2022}, {"otters-2022"}),
        ({"field": "year", "range": {"lt": 2021}}, {"otters-2019", "volcano"}),
        ({"field": "kind", "in": ["field-note"]}, {"otters-2019"}),
        (
            {"field": "published", "range": {"gte": "2019-01-01", "lt": "2020-01-01"}},
            {"otters-2019"},
        ),
        ({"field": "peer_reviewed", "exists": True}, {"otters-2022"}),
        ({"not": {"field": "kind", "eq": "review"}}, {"otters-2019"}),
        (
            {"and": [{"field": "kind", "eq": "review"}, {"field": "year", "range": {"gte": 2021}}]},
            {"otters-2022"},
        ),
    ],
)
@pytest.mark.parametrize("mode", ["dense", "hybrid", "lexical"])
def test_a_filter_limits_the_citations_to_matching_documents(
    searchable, filter: dict[str, Any], allowed: set[str], mode: str
) -> None:
    api, tenant, ids = searchable
    response = ask(api, tenant.query_key, QUESTION, filter=filter, mode=mode, top_k=10)

    assert cited(response, ids) <= allowed
    assert response.json()["answerable"] is bool(cited(response, ids))


def test_without_a_filter_both_otter_notes_are_found(searchable) -> None:
    api, tenant, ids = searchable
    response = ask(api, tenant.query_key, QUESTION, top_k=10)
    assert {"otters-2019", "otters-2022"} <= cited(response, ids)


@pytest.mark.parametrize(
    ("filter", "field", "words"),
    [
        ({"field": "colour", "eq": "red"}, "filter.colour", "not declared"),
        ({"field": "year", "eq": "2019"}, "filter.year", "expected an integer"),
        ({"field": "year", "near": 2019}, "filter.year", "exactly one operator"),
        ({"field": "kind", "range": {"gt": "a"}}, "filter.kind", "'range' needs"),
        ({"or": []}, "filter", "non-empty list"),
        (
            {
                "not": {
                    "not": {
                        "not": {
                            "not": {"not": {"not": {"not": {"not": {"field": "year", "eq": 1}}}}}
                        }
                    }
                }
            },
            "filter.not.not.not.not.not.not.not.not",
            "deeper than",
        ),
    ],
)
def test_a_bad_filter_is_a_422_that_names_the_field(
    searchable, filter: dict[str, Any], field: str, words: str
) -> None:
    api, tenant, _ = searchable
    problem = assert_problem(
        ask(api, tenant.query_key, QUESTION, filter=filter), 422, "invalid-request"
    )
    assert problem["field"] == field
    assert words in problem["detail"]


def test_lexical_mode_ranks_by_the_words(searchable) -> None:
    api, tenant, ids = searchable
    response = ask(api, tenant.query_key, "Zzyzx basalt columns", mode="lexical", top_k=1)
    assert cited(response, ids) == {"volcano"}


def test_a_namespace_keeps_its_search_settings(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    created = make_namespace(api, tenant, "docs", search={"mode": "dense"})
    assert created["search"] == {"mode": "dense"}

    patched = api.client.patch(
        "/v1/namespaces/docs",
        json={"search": {"mode": "lexical", "lexical_weight": 2.0}},
        headers=api.headers(tenant.admin_key),
    )

    assert patched.status_code == 200, patched.text
    assert patched.json()["search"] == {"mode": "lexical", "lexical_weight": 2.0}
    bad = api.client.patch(
        "/v1/namespaces/docs",
        json={"search": {"mode": "semantic"}},
        headers=api.headers(tenant.admin_key),
    )
    assert_problem(bad, 422, "validation-error")


@pytest.mark.parametrize(
    ("documents", "field"),
    [
        ([{"text": "a", "metadata": {"year": "2019"}}], "documents[0].metadata.year"),
        (
            [{"text": "a"}, {"text": "b", "metadata": {"published": "soon"}}],
            "documents[1].metadata.published",
        ),
        ([{"text": "a", "metadata": {"kind": ["x", 3]}}], "documents[0].metadata.kind"),
        (
            [{"text": "a", "metadata": {"peer_reviewed": "yes"}}],
            "documents[0].metadata.peer_reviewed",
        ),
    ],
)
def test_metadata_of_the_wrong_type_for_a_declared_field_refuses_the_upload(
    api: Api, documents: list[dict[str, Any]], field: str
) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", indexed_fields=FIELDS)

    response = api.client.post(
        "/v1/namespaces/docs/documents",
        json={"documents": documents},
        headers=api.headers(tenant.write_key),
    )

    problem = assert_problem(response, 422, "invalid-request")
    assert problem["field"] == field
    listed = api.client.get("/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key))
    assert listed.json()["total"] == 0  # nothing was half-accepted


def test_declared_datetimes_are_stored_in_one_form(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs", indexed_fields=FIELDS)
    accepted = upload(
        api,
        tenant,
        "docs",
        [{"text": "a", "metadata": {"published": "2020-07-01T02:00:00+02:00", "other": "x"}}],
    )
    doc_id = accepted["documents"][0]["id"]

    read = api.client.get(
        f"/v1/namespaces/docs/documents/{doc_id}", headers=api.headers(tenant.write_key)
    )

    assert read.json()["metadata"] == {"published": "2020-07-01T00:00:00.000000Z", "other": "x"}


def test_search_returns_the_passages_without_an_answer(searchable) -> None:
    api, tenant, ids = searchable
    response = api.client.post(
        "/v1/namespaces/docs/search",
        json={
            "question": QUESTION,
            "top_k": 3,
            "filter": {"field": "year", "range": {"gte": 2020}},
        },
        headers=api.headers(tenant.query_key),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert [ids[p["document_id"]] for p in body["passages"]][:1] == ["otters-2022"]
    assert {ids[p["document_id"]] for p in body["passages"]} <= {"otters-2022", "volcano"}
    assert all(-1 <= p["score"] <= 1 and p["text"] for p in body["passages"])
    assert {"embed", "search", "total"} <= set(body["timings_ms"])
    assert "answer" not in body
    forbidden = api.client.post(
        "/v1/namespaces/docs/search",
        json={"question": QUESTION},
        headers=api.headers(tenant.write_key),
    )
    assert_problem(forbidden, 403, "forbidden")
