"""Uploads (JSON and multipart), jobs, dedup, listing, deletion; tenancy on documents and jobs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from app.db.session import make_engine, make_session_factory
from app.services import documents, namespaces
from app.services.keys import TenantAccess
from app.services.uploads import UploadItem
from ingestion.embedder import ModelEmbedder
from tests.api.conftest import assert_problem, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api, make_settings, start_api

OTTERS = "Sea otters hold hands while they sleep so that they do not drift apart."
VOLCANO = (
    "# Volcanoes\n\nMount Etna is the most active volcano in Europe.\n\n"
    "## Eruptions\n\nIt erupted in 2021."
)


def _points(api: Api, namespace: dict[str, str], **where: str) -> int:
    collection = "ns_" + namespace["id"].replace("-", "")
    return api.platform.store.count(collection, where=where)


def test_json_upload_is_accepted_at_once_and_indexed(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    accepted = upload(
        api,
        tenant,
        "docs",
        [
            {"text": OTTERS, "filename": "otters.txt", "metadata": {"topic": "animals"}},
            {"content_base64": base64.b64encode(VOLCANO.encode()).decode(), "filename": "etna.md"},
        ],
    )
    assert len(accepted["documents"]) == 2
    assert all(d["duplicate"] is False for d in accepted["documents"])
    job = wait_for_job(api, tenant, accepted["job_id"])
    assert job["state"] == "succeeded"
    assert job["counts"] == {
        "queued": 0,
        "parsing": 0,
        "embedding": 0,
        "indexed": 2,
        "failed": 0,
        "removed": 0,
    }
    otters_id = accepted["documents"][0]["id"]
    assert _points(api, namespace, tenant_id=tenant.id, document_id=otters_id) >= 1

    doc = api.client.get(
        f"/v1/namespaces/docs/documents/{otters_id}", headers=api.headers(tenant.query_key)
    )
    assert doc.status_code == 200
    assert doc.json()["state"] == "indexed"
    assert doc.json()["metadata"] == {"topic": "animals"}
    assert doc.json()["media_type"] == "text/plain"


def test_multipart_upload_with_metadata_per_file(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    response = api.client.post(
        "/v1/namespaces/docs/documents",
        files=[
            ("files", ("otters.txt", OTTERS.encode(), "text/plain")),
            ("files", ("etna.md", VOLCANO.encode(), "text/markdown")),
        ],
        data={"metadata": [json.dumps({"n": 1}), json.dumps({"n": 2})]},
        headers=api.headers(tenant.write_key),
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    listed = api.client.get(
        "/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key)
    ).json()
    assert listed["total"] == 2
    by_name = {d["filename"]: d for d in listed["items"]}
    assert by_name["otters.txt"]["metadata"] == {"n": 1}
    assert by_name["etna.md"]["metadata"] == {"n": 2}
    assert by_name["etna.md"]["media_type"] == "text/markdown"


def test_reuploading_identical_content_creates_no_document_or_point(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    first = upload(api, tenant, "docs", [{"text": OTTERS}])
    wait_for_job(api, tenant, first["job_id"])
    points_before = _points(api, namespace, tenant_id=tenant.id)
    # The same text with Windows line endings and a trailing NUL normalises to the same content.
    second = upload(api, tenant, "docs", [{"text": OTTERS + "\x00"}, {"text": OTTERS}])
    assert [d["duplicate"] for d in second["documents"]] == [True, True]
    assert {d["id"] for d in second["documents"]} == {first["documents"][0]["id"]}
    assert wait_for_job(api, tenant, second["job_id"])["state"] == "succeeded"
    assert _points(api, namespace, tenant_id=tenant.id) == points_before
    listed = api.client.get("/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key))
    assert listed.json()["total"] == 1


def test_same_content_in_two_namespaces_is_two_documents(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "one")
    make_namespace(api, tenant, "two")
    a = upload(api, tenant, "one", [{"text": OTTERS}])["documents"][0]
    b = upload(api, tenant, "two", [{"text": OTTERS}])["documents"][0]
    assert a["id"] != b["id"]
    assert b["duplicate"] is False


def test_deleting_a_document_removes_its_points(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    namespace = make_namespace(api, tenant, "docs")
    accepted = upload(
        api, tenant, "docs", [{"text": OTTERS}, {"text": VOLCANO, "filename": "v.md"}]
    )
    wait_for_job(api, tenant, accepted["job_id"])
    otters, volcano = (d["id"] for d in accepted["documents"])
    assert _points(api, namespace, document_id=otters) > 0
    deleted = api.client.delete(
        f"/v1/namespaces/docs/documents/{otters}", headers=api.headers(tenant.write_key)
    )
    assert deleted.status_code == 204
    assert _points(api, namespace, document_id=otters) == 0
    assert _points(api, namespace, document_id=volcano) > 0
    again = api.client.get(
        f"/v1/namespaces/docs/documents/{otters}", headers=api.headers(tenant.write_key)
    )
    assert_problem(again, 404, "not-found")


def test_a_document_that_cannot_be_parsed_fails_alone_with_a_reason(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    accepted = upload(
        api, tenant, "docs", [{"text": OTTERS}, {"text": "   \n\t  ", "filename": "blank.txt"}]
    )
    job = wait_for_job(api, tenant, accepted["job_id"])
    assert job["state"] == "partial"
    states = {d["filename"]: d for d in job["documents"]}
    assert states["blank.txt"]["state"] == "failed"
    assert states["blank.txt"]["reason"]

    url, headers = f"/v1/jobs/{accepted['job_id']}", api.headers(tenant.write_key)
    failed_only = api.client.get(url, params={"state": "failed"}, headers=headers).json()
    assert [d["filename"] for d in failed_only["documents"]] == ["blank.txt"]
    assert failed_only["counts"] == job["counts"]  # the counts cover every document
    assert job["counts"]["indexed"] == job["counts"]["failed"] == 1
    bad = api.client.get(url, params={"state": "lost"}, headers=headers)
    assert_problem(bad, 422, "validation-error")


def test_unsupported_type_is_415_and_nothing_is_written(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    response = api.client.post(
        "/v1/namespaces/docs/documents",
        files=[
            ("files", ("ok.txt", OTTERS.encode(), "text/plain")),
            ("files", ("tool.bin", b"\x7fELF\x00\x01\x02\x00\xff", "application/octet-stream")),
        ],
        headers=api.headers(tenant.write_key),
    )
    assert_problem(response, 415, "unsupported-media-type")
    listed = api.client.get("/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key))
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("documents", "slug"),
    [
        ([], "validation-error"),
        ([{"filename": "x.txt"}], "invalid-request"),
        ([{"text": "a", "content_base64": "YQ=="}], "invalid-request"),
        ([{"content_base64": "not base64!"}], "invalid-request"),
        ([{"text": "a", "colour": "red"}], "validation-error"),
    ],
)
def test_bad_upload_bodies_are_422(api: Api, documents: list[dict[str, str]], slug: str) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    response = api.client.post(
        "/v1/namespaces/docs/documents",
        json={"documents": documents},
        headers=api.headers(tenant.write_key),
    )
    assert_problem(response, 422, slug)


def test_malformed_json_and_mismatched_metadata_are_422(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    headers = {**api.headers(tenant.write_key), "content-type": "application/json"}
    broken = api.client.post("/v1/namespaces/docs/documents", content=b"{not json", headers=headers)
    assert_problem(broken, 422, "validation-error")
    mismatched = api.client.post(
        "/v1/namespaces/docs/documents",
        files=[("files", ("a.txt", b"a", "text/plain"))] * 3,
        data={"metadata": ["{}", "{}"]},
        headers=api.headers(tenant.write_key),
    )
    assert assert_problem(mismatched, 422, "invalid-request")["field"] == "metadata"


def test_upload_over_the_size_limit_is_413(tmp_path, sqlite_url, embedder) -> None:
    settings = make_settings(tmp_path, sqlite_url).model_copy(update={"max_upload_mb": 1})
    for api in start_api(settings, embedder):
        tenant = make_tenant(api, "acme")
        make_namespace(api, tenant, "docs")
        big = "word " * 300_000
        response = api.client.post(
            "/v1/namespaces/docs/documents",
            json={"documents": [{"text": big}]},
            headers=api.headers(tenant.write_key),
        )
        assert_problem(response, 413, "payload-too-large")


def test_query_key_cannot_upload_or_delete(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    headers = api.headers(tenant.query_key)
    up = api.client.post(
        "/v1/namespaces/docs/documents", json={"documents": [{"text": "x"}]}, headers=headers
    )
    assert_problem(up, 403, "forbidden")
    accepted = upload(api, tenant, "docs", [{"text": OTTERS}])
    doc_id = accepted["documents"][0]["id"]
    assert_problem(
        api.client.delete(f"/v1/namespaces/docs/documents/{doc_id}", headers=headers),
        403,
        "forbidden",
    )
    assert_problem(
        api.client.get(f"/v1/jobs/{accepted['job_id']}", headers=headers), 403, "forbidden"
    )
    assert (
        api.client.get(f"/v1/namespaces/docs/documents/{doc_id}", headers=headers).status_code
        == 200
    )


def test_another_tenants_documents_and_jobs_are_the_same_404_as_missing_ones(
    api_any_db: Api,
) -> None:
    api = api_any_db
    a = make_tenant(api, "a")
    b = make_tenant(api, "b")
    make_namespace(api, a, "docs")
    make_namespace(api, b, "docs")
    accepted = upload(api, b, "docs", [{"text": OTTERS}])
    wait_for_job(api, b, accepted["job_id"])
    doc_id = accepted["documents"][0]["id"]
    missing_id = "00000000-0000-0000-0000-000000000000"
    for path in ("/v1/namespaces/docs/documents/{}", "/v1/jobs/{}"):
        theirs = api.client.get(
            path.format(doc_id if "documents" in path else accepted["job_id"]),
            headers=api.headers(a.write_key),
        )
        missing = api.client.get(path.format(missing_id), headers=api.headers(a.write_key))
        assert_problem(theirs, 404, "not-found")
        assert_problem(missing, 404, "not-found")
        assert theirs.json()["title"] == missing.json()["title"]
    delete = api.client.delete(
        f"/v1/namespaces/docs/documents/{doc_id}", headers=api.headers(a.write_key)
    )
    assert_problem(delete, 404, "not-found")
    assert (
        api.client.get(
            f"/v1/namespaces/docs/documents/{doc_id}", headers=api.headers(b.write_key)
        ).status_code
        == 200
    )
    assert (
        api.client.get("/v1/namespaces/docs/documents", headers=api.headers(a.write_key)).json()[
            "total"
        ]
        == 0
    )


def test_documents_left_pending_by_a_crash_are_indexed_at_the_next_start(
    tmp_path: Path, sqlite_url: str, embedder: ModelEmbedder
) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    sessions = make_session_factory(make_engine(sqlite_url))
    for api in start_api(settings, embedder):
        tenant = make_tenant(api, "acme")
        make_namespace(api, tenant, "docs")
        with sessions() as session:
            namespace = namespaces.get_namespace(
                session, access=TenantAccess(tenant.id), name="docs"
            )
            # Recorded, never handed to a worker: what a crash right after commit leaves behind.
            crashed = documents.upload(
                session,
                namespace=namespace,
                items=[UploadItem(data=OTTERS.encode(), filename="otters.txt")],
                enqueue=lambda _tenant, _ids: None,
            )
    for api in start_api(settings, embedder):
        job = wait_for_job(api, tenant, crashed.job.id)
        assert job["state"] == "succeeded"
