"""Versions under one ``external_id``: numbered, listed one at a time, swapped atomically."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import delete

from app.db.models import Document
from tests.api.conftest import (
    Response,
    Tenant,
    make_namespace,
    make_tenant,
    upload,
    wait_for_job,
)
from tests.conftest import Api

# One unique word per version: a citation's text tells which version it quotes.
WORDS = ["aardvark", "bassoon", "cobalt", "dulcimer", "emerald", "fjord", "gazebo"]
QUESTION = "How do employees book flights under the travel policy?"


def policy(word: str) -> dict[str, Any]:
    return {
        "text": f"Travel policy: employees book flights through the {word} portal.",
        "filename": "policy.txt",
        "external_id": "policy",
    }


def put_version(api: Api, tenant: Tenant, word: str) -> dict[str, Any]:
    """Upload a version and wait until it is indexed; its upload answer."""
    accepted = upload(api, tenant, "docs", [policy(word)])
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    document: dict[str, Any] = accepted["documents"][0]
    return document


def ask(api: Api, tenant: Tenant, question: str = QUESTION) -> Response:
    return api.client.post(
        "/v1/namespaces/docs/query",
        json={"question": question},
        headers=api.headers(tenant.query_key),
    )


def listed(api: Api, tenant: Tenant) -> list[dict[str, Any]]:
    response = api.client.get(
        "/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def points(api: Api, namespace: dict[str, Any], document_id: str) -> int:
    collection = "ns_" + namespace["id"].replace("-", "")
    return api.platform.store.count(collection, where={"document_id": document_id})


def test_the_list_filters_by_external_id(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    put_version(api, tenant, WORDS[0])
    v2 = put_version(api, tenant, WORDS[1])
    other = upload(api, tenant, "docs", [{"text": "Offices close at six.", "external_id": "x"}])
    wait_for_job(api, tenant, other["job_id"])

    def versions(external_id: str) -> list[tuple[str, int]]:
        response = api.client.get(
            "/v1/namespaces/docs/documents",
            params={"external_id": external_id},
            headers=api.headers(tenant.query_key),
        )
        assert response.status_code == 200, response.text
        return [(d["id"], d["version"]) for d in response.json()["items"]]

    assert versions("policy") == [(v2["id"], 2)]  # version 1 was replaced
    assert versions("x") == [(other["documents"][0]["id"], 1)]
    assert versions("nothing") == []


@pytest.mark.slow
def test_versions_count_up_and_only_the_current_one_is_listed_and_cited(api_any_db: Api) -> None:
    api = api_any_db
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    v1 = put_version(api, tenant, WORDS[0])
    v2 = put_version(api, tenant, WORDS[1])
    assert (v1["version"], v2["version"]) == (1, 2)
    [current] = listed(api, tenant)
    assert (current["id"], current["version"], current["external_id"]) == (v2["id"], 2, "policy")
    old = api.client.get(
        f"/v1/namespaces/docs/documents/{v1['id']}", headers=api.headers(tenant.write_key)
    )
    assert old.status_code == 404
    assert points(api, namespace, v1["id"]) == 0
    assert {c["document_id"] for c in ask(api, tenant).json()["citations"]} == {v2["id"]}
    # The same content again is the current version, not a new one.
    again = upload(api, tenant, "docs", [policy(WORDS[1])])["documents"][0]
    assert (again["id"], again["duplicate"], again["version"]) == (v2["id"], True, 2)
    # Documents without an external id, or with another, are left alone.
    other = {"text": "Expenses are filed monthly.", "external_id": "expenses"}
    accepted = upload(api, tenant, "docs", [other, {"text": "Offices close at six."}])
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    assert [d["version"] for d in accepted["documents"]] == [1, 1]
    assert len(listed(api, tenant)) == 3


@pytest.mark.slow
def test_deleting_the_current_version_removes_it_from_lists_and_answers(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    put_version(api, tenant, WORDS[0])
    v2 = put_version(api, tenant, WORDS[1])
    deleted = api.client.delete(
        f"/v1/namespaces/docs/documents/{v2['id']}", headers=api.headers(tenant.write_key)
    )
    assert deleted.status_code == 204
    assert listed(api, tenant) == []
    assert points(api, namespace, v2["id"]) == 0
    assert ask(api, tenant).json()["citations"] == []
    # The id is free again: the next upload under it is its only version.
    v3 = put_version(api, tenant, WORDS[2])
    assert [d["id"] for d in listed(api, tenant)] == [v3["id"]]


@pytest.mark.slow
def test_a_job_whose_document_was_replaced_says_so(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    first = upload(api, tenant, "docs", [policy(WORDS[0])])
    assert wait_for_job(api, tenant, first["job_id"])["state"] == "succeeded"
    put_version(api, tenant, WORDS[1])

    job = api.client.get(f"/v1/jobs/{first['job_id']}", headers=api.headers(tenant.write_key))

    body = job.json()
    assert body["state"] == "succeeded"
    assert body["documents"] == []
    assert body["counts"]["removed"] == 1  # not a job of zero documents
    assert body["counts"]["indexed"] == 0


def test_points_of_a_document_without_an_indexed_row_are_never_cited(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    v1 = put_version(api, tenant, WORDS[0])
    # What a failed point removal leaves: the row is gone, the points stay.
    with api.platform.sessions() as session:
        session.execute(delete(Document).where(Document.id == v1["id"]))
        session.commit()
    assert points(api, namespace, v1["id"]) >= 1
    body = ask(api, tenant).json()
    assert body["citations"] == []
    assert body["answerable"] is False


@pytest.mark.slow
def test_every_query_during_version_swaps_cites_exactly_one_version(api_any_db: Api) -> None:
    api = api_any_db
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    first = put_version(api, tenant, WORDS[0])
    version_of = {first["id"]: 1}
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()

    def query_in_a_loop() -> None:
        while not stop.is_set():
            response = ask(api, tenant)
            if response.status_code != 200:
                failures.append(response.text)
                return
            answers.append(response.json())

    reader = threading.Thread(target=query_in_a_loop)
    reader.start()
    try:
        for word in WORDS[1:]:
            document = put_version(api, tenant, word)
            version_of[document["id"]] = document["version"]
    finally:
        stop.set()
        reader.join()

    assert failures == []
    assert sorted(version_of.values()) == list(range(1, len(WORDS) + 1))
    cited_versions = []
    for body in answers:
        cited = {c["document_id"] for c in body["citations"]}
        assert len(cited) == 1, body  # never two versions, never none
        [document_id] = cited
        assert document_id in version_of, body
        word = WORDS[version_of[document_id] - 1]
        assert all(word in c["text"] for c in body["citations"]), body
        cited_versions.append(version_of[document_id])
    # The reader saw the swaps happen, in order: no version came back after a newer one.
    assert len(set(cited_versions)) > 1, cited_versions
    assert cited_versions == sorted(cited_versions)
