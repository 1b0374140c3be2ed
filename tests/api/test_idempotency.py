"""``Idempotency-Key`` on uploads: a retry gets the first answer and job, never a second job."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from app.db.models import Job
from tests.api.conftest import Response, Tenant, assert_problem, make_namespace, make_tenant
from tests.conftest import Api

OTTERS = {"text": "Sea otters hold hands while they sleep.", "filename": "otters.txt"}
ETNA = {"text": "Mount Etna is the most active volcano in Europe.", "filename": "etna.txt"}


def post(
    api: Api, tenant: Tenant, key: str | None, documents: list[dict[str, Any]], ns: str = "docs"
) -> Response:
    headers = api.headers(tenant.write_key)
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(
        f"/v1/namespaces/{ns}/documents", json={"documents": documents}, headers=headers
    )


def jobs_in_database(api: Api) -> int:
    with api.platform.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_the_same_key_and_body_return_the_same_answer_and_one_job(api_any_db: Api) -> None:
    api = api_any_db
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    first = post(api, tenant, "upload-1", [OTTERS, ETNA])
    again = post(api, tenant, "upload-1", [OTTERS, ETNA])
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert jobs_in_database(api) == 1
    # Without a key, the same body is a new job (its documents duplicates).
    plain = post(api, tenant, None, [OTTERS, ETNA])
    assert plain.json()["job_id"] != first.json()["job_id"]
    assert all(d["duplicate"] for d in plain.json()["documents"])


def test_the_same_key_with_another_body_is_a_422(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    make_namespace(api, tenant, "other")
    assert post(api, tenant, "upload-1", [OTTERS]).status_code == 202
    body = assert_problem(post(api, tenant, "upload-1", [ETNA]), 422, "idempotency-key-reused")
    assert "upload-1" in body["detail"]
    # The namespace is part of the request too.
    assert_problem(
        post(api, tenant, "upload-1", [OTTERS], ns="other"), 422, "idempotency-key-reused"
    )
    assert jobs_in_database(api) == 1


def test_keys_are_per_tenant(api: Api) -> None:
    acme, globex = make_tenant(api, "acme"), make_tenant(api, "globex")
    make_namespace(api, acme, "docs")
    make_namespace(api, globex, "docs")
    first = post(api, acme, "upload-1", [OTTERS])
    other = post(api, globex, "upload-1", [OTTERS])
    assert first.status_code == other.status_code == 202
    assert first.json()["job_id"] != other.json()["job_id"]
    assert "idempotent-replayed" not in other.headers


def test_a_key_longer_than_255_characters_is_a_422(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    assert post(api, tenant, "k" * 255, [OTTERS]).status_code == 202
    assert_problem(post(api, tenant, "k" * 256, [ETNA]), 422, "validation-error")
    assert_problem(post(api, tenant, "", [ETNA]), 422, "validation-error")
    assert jobs_in_database(api) == 1


def test_a_multipart_retry_with_the_same_bytes_is_replayed(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="files"; filename="otters.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"Sea otters hold hands while they sleep.\r\n"
        b"--b0undary--\r\n"
    )
    headers = {
        **api.headers(tenant.write_key),
        "Content-Type": "multipart/form-data; boundary=b0undary",
        "Idempotency-Key": "multipart-1",
    }
    answers = [
        api.client.post("/v1/namespaces/docs/documents", content=body, headers=headers)
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [202, 202], answers[0].text
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["documents"][0]["filename"] == "otters.txt"
    changed = body.replace(b"hold hands", b"float")
    assert_problem(
        api.client.post("/v1/namespaces/docs/documents", content=changed, headers=headers),
        422,
        "idempotency-key-reused",
    )


def test_a_client_retry_of_the_same_files_is_replayed_whatever_its_boundary(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    files = [("files", ("otters.txt", OTTERS["text"].encode(), "text/plain"))]
    headers = {**api.headers(tenant.write_key), "Idempotency-Key": "files-1"}
    sent = [
        api.client.post("/v1/namespaces/docs/documents", files=files, headers=headers)
        for _ in range(2)
    ]
    assert [s.status_code for s in sent] == [202, 202], sent[0].text
    assert sent[1].headers.get("Idempotent-Replayed") == "true"
    assert sent[0].json() == sent[1].json()
    other = [("files", ("otters.txt", ETNA["text"].encode(), "text/plain"))]
    assert_problem(
        api.client.post("/v1/namespaces/docs/documents", files=other, headers=headers),
        422,
        "idempotency-key-reused",
    )
    assert jobs_in_database(api) == 1


def test_concurrent_requests_with_one_key_make_one_job(api_any_db: Api) -> None:
    api = api_any_db
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    barrier = threading.Barrier(6)

    def one_request(_: int) -> Response:
        barrier.wait()
        return post(api, tenant, "racing", [OTTERS, ETNA])

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one_request, range(6)))
    assert [a.status_code for a in answers] == [202] * 6, [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    replayed = sorted(a.headers.get("idempotent-replayed", "no") for a in answers)
    assert replayed == ["no"] + ["true"] * 5
    assert jobs_in_database(api) == 1
