"""Every upload format, through the API in process (TestClient: ASGI calls, no socket):
indexed, found by its own words, and cited.

Each document holds a made-up word that no other holds; a question about it must be answered
from that document. One batch carries every format plus a corrupt PDF, so the model indexes
once for the whole file.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ingestion.prompt_tokens import count_prompt_tokens
from retrieval.stores.base import SearchRequest
from tests.api.conftest import (
    assert_problem,
    make_namespace,
    make_tenant,
    upload,
    wait_for_job,
)
from tests.conftest import Api
from tests.data import SCIFACT
from tests.ingestion.samples import DOCX_TYPE, make_docx, make_pdf

SCIFACT_CORPUS = SCIFACT / "corpus.jsonl"
JSON_RECORD = {
    "_id": "bird-7",
    "title": "Glimmerhawks",
    "text": "The glimmerhawk nests on sea cliffs and hunts flying fish at dawn.",
    "metadata": {"habitat": "coast"},
}
JSONL_RECORDS = [
    {
        "_id": "j1",
        "title": "Torvalline bread",
        "text": "Torvalline bread is baked with pine ash and honey in Finnish villages.",
    },
    {
        "_id": "j2",
        "title": "Ostrelle dance",
        "text": "The ostrelle dance is performed on stilts at harvest festivals in Portugal.",
    },
]
PAGE = """<!DOCTYPE html><html><head><title>Zephyrine tides</title>
<script>var tracker = "skribblewonk"; // skribblewonk skribblewonk</script></head>
<body><nav><a href="/">Home</a></nav><main><h1>Zephyrine tides</h1>
<p>Zephyrine tides flood the salt marshes of Gascony twice a year.</p></main>
<script>document.title = "skribblewonk";</script></body></html>"""

FILES: list[tuple[str, bytes, str]] = [
    (
        "crystals.txt",
        b"Quorvath crystals hum softly when they are exposed to moonlight in the desert.",
        "text/plain",
    ),
    (
        "fungi.md",
        b"# Brindlecaps\n\nThe brindlecap mushroom glows green in the forests of Norway after "
        b"heavy rain.\n",
        "text/markdown",
    ),
    ("tides.html", PAGE.encode(), "text/html"),
    (
        "engine.pdf",
        make_pdf(
            ["Marine engines", "The plimsoth engine burns kelp oil to power fishing boats."],
            title="Plimsoth engines",
        ),
        "application/pdf",
    ),
    (
        "choirs.docx",
        make_docx(["Vandermoot choirs sing only during the winter solstice in the Andes."]),
        DOCX_TYPE,
    ),
    ("bird.json", json.dumps(JSON_RECORD).encode(), "application/json"),
    (
        "customs.jsonl",
        "".join(json.dumps(r) + "\n" for r in JSONL_RECORDS).encode(),
        "application/octet-stream",
    ),
    ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", "application/pdf"),
]
# The question about each made-up word, and the document that must answer it.
QUESTIONS = {
    "quorvath": ("What do quorvath crystals do in moonlight?", "crystals.txt"),
    "brindlecap": ("When does the brindlecap mushroom glow green?", "fungi.md"),
    "zephyrine": ("When do zephyrine tides flood the salt marshes?", "tides.html"),
    "plimsoth": ("What does the plimsoth engine burn?", "engine.pdf"),
    "vandermoot": ("When do vandermoot choirs sing?", "choirs.docx"),
    "glimmerhawk": ("Where does the glimmerhawk nest?", "bird.json#bird-7"),
    "torvalline": ("What is torvalline bread baked with?", "customs.jsonl#j1"),
    "ostrelle": ("Where is the ostrelle dance performed?", "customs.jsonl#j2"),
}


def post_files(api: Api, key: str, files: list[tuple[str, bytes, str]]) -> Any:
    return api.client.post(
        "/v1/namespaces/docs/documents",
        files=[("files", file) for file in files],
        headers=api.headers(key),
    )


@pytest.fixture
def indexed(api: Api):
    """Every format uploaded in one batch and indexed; the corrupt PDF failed."""
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    response = post_files(api, tenant.write_key, FILES)
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = wait_for_job(api, tenant, accepted["job_id"])
    ids = {d["filename"]: d["id"] for d in accepted["documents"]}
    return api, tenant, ids, job


def ask(api: Api, key: str, question: str) -> dict[str, Any]:
    response = api.client.post(
        "/v1/namespaces/docs/query", json={"question": question}, headers=api.headers(key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.slow
def test_a_corrupt_pdf_fails_alone_with_a_reason_while_every_other_format_indexes(
    indexed,
) -> None:
    _, _, ids, job = indexed
    assert job["state"] == "partial"
    states = {d["filename"]: d for d in job["documents"]}
    assert states.keys() == ids.keys() == {*(name for _, name in QUESTIONS.values()), "broken.pdf"}
    assert states["broken.pdf"]["state"] == "failed"
    assert states["broken.pdf"]["reason"].startswith("not a valid PDF: ")
    assert all(d["state"] == "indexed" for name, d in states.items() if name != "broken.pdf")


@pytest.mark.slow
@pytest.mark.parametrize("word", QUESTIONS)
def test_each_format_answers_the_question_about_its_own_word(indexed, word: str) -> None:
    api, tenant, ids, _ = indexed
    question, filename = QUESTIONS[word]
    body = ask(api, tenant.query_key, question)
    assert body["answerable"] is True, body
    best = body["citations"][0]
    assert best["document_id"] == ids[filename], body
    assert word in best["text"].lower()


@pytest.mark.slow
def test_script_text_of_an_html_page_is_never_indexed(indexed) -> None:
    api, tenant, _, _ = indexed
    body = ask(api, tenant.query_key, "skribblewonk tracker document title")
    assert all("skribblewonk" not in c["text"] for c in body["citations"])


@pytest.mark.slow
def test_json_records_become_documents_with_their_id_and_metadata(indexed) -> None:
    api, tenant, ids, _ = indexed
    doc = api.client.get(
        f"/v1/namespaces/docs/documents/{ids['bird.json#bird-7']}",
        headers=api.headers(tenant.query_key),
    ).json()
    assert doc["external_id"] == "bird-7"
    assert doc["metadata"] == {"habitat": "coast"}
    assert doc["media_type"] == "application/json"
    listed = api.client.get(
        "/v1/namespaces/docs/documents", headers=api.headers(tenant.query_key)
    ).json()
    assert listed["total"] == len(FILES) - 1 + len(JSONL_RECORDS)


def test_a_jsonl_file_with_a_bad_line_is_refused_naming_file_and_line(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    bad = json.dumps(JSONL_RECORDS[0]).encode() + b'\n{"_id": "j2", "text": \n'
    response = post_files(
        api,
        tenant.write_key,
        [("ok.txt", b"fine", "text/plain"), ("customs.jsonl", bad, "application/x-ndjson")],
    )
    problem = assert_problem(response, 422, "unparsable-document")
    assert problem["detail"].startswith("customs.jsonl: line 2: not valid JSON")
    listed = api.client.get("/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key))
    assert listed.json()["total"] == 0


def test_records_without_ids_take_the_uploads_external_id_and_their_position(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    lines = (
        b'{"text": "first record"}\n{"text": "second record", "_id": "own"}\n{"text": "third"}\n'
    )
    accepted = upload(
        api,
        tenant,
        "docs",
        [
            {
                "content_base64": base64.b64encode(lines).decode(),
                "filename": "batch.jsonl",
                "external_id": "batch",
                "metadata": {"source": "upload"},
            }
        ],
    )
    names = [d["filename"] for d in accepted["documents"]]
    assert names == ["batch.jsonl#1", "batch.jsonl#own", "batch.jsonl#3"]
    listed = api.client.get(
        "/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key)
    ).json()
    by_name = {d["filename"]: d for d in listed["items"]}
    assert [by_name[n]["external_id"] for n in names] == ["batch#1", "own", "batch#3"]
    assert all(by_name[n]["metadata"] == {"source": "upload"} for n in names)


@pytest.mark.slow
def test_the_scifact_corpus_uploads_as_one_file_and_becomes_5183_documents(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "scifact")
    response = api.client.post(
        "/v1/namespaces/scifact/documents",
        files=[
            ("files", ("corpus.jsonl", SCIFACT_CORPUS.read_bytes(), "application/octet-stream"))
        ],
        headers=api.headers(tenant.write_key),
    )
    assert response.status_code == 202, response.text
    documents = response.json()["documents"]
    assert len(documents) == 5183
    assert documents[0]["filename"] == "corpus.jsonl#4983"
    assert len({d["id"] for d in documents}) == 5183


@pytest.mark.slow
def test_citations_say_where_the_passage_is_and_chunks_know_their_prompt_cost(indexed) -> None:
    api, tenant, ids, _ = indexed
    pdf = ask(api, tenant.query_key, QUESTIONS["plimsoth"][0])["citations"][0]
    assert (pdf["filename"], pdf["title"], pdf["page"]) == ("engine.pdf", "Plimsoth engines", 1)
    markdown = ask(api, tenant.query_key, QUESTIONS["brindlecap"][0])["citations"][0]
    assert markdown["section"] == "Brindlecaps"
    assert markdown["page"] is None  # a format without pages

    namespace = api.client.get("/v1/namespaces/docs", headers=api.headers(tenant.write_key))
    collection = "ns_" + namespace.json()["id"].replace("-", "")
    [vector] = api.platform.embedder.encode([QUESTIONS["plimsoth"][0]])
    request = SearchRequest(vector, where={"document_id": ids["engine.pdf"]}, limit=1)
    [hit] = api.platform.store.search(collection, request)
    assert hit.payload["llm_tokens"] == count_prompt_tokens(hit.payload["text"]) > 0


CRANES = {
    "title": "Cranes",
    "body": "Whooping cranes winter in the Aransas marshes, where they feast on quillomar crabs.",
    "range": {"summer": "Wood Buffalo", "counts": [{"year": 2023, "birds": 536}]},
}


def test_a_json_object_without_a_text_field_is_indexed_whole_and_found_by_its_word(
    api: Api,
) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    herons = b"Grey herons stand still in shallow water and spear fish with their bills."
    response = post_files(
        api,
        tenant.write_key,
        [
            ("d.json", json.dumps(CRANES).encode(), "application/json"),
            ("herons.txt", herons, "text/plain"),
        ],
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert [d["filename"] for d in accepted["documents"]] == ["d.json", "herons.txt"]
    job = wait_for_job(api, tenant, accepted["job_id"])
    assert [d["state"] for d in job["documents"]] == ["indexed", "indexed"], job

    found = api.client.post(
        "/v1/namespaces/docs/search",
        json={"question": "quillomar", "top_k": 2},
        headers=api.headers(tenant.query_key),
    )
    assert found.status_code == 200, found.text
    best = found.json()["passages"][0]
    assert best["document_id"] == accepted["documents"][0]["id"]
    assert (best["filename"], best["title"]) == ("d.json", "Cranes")
    assert "body: Whooping cranes" in best["text"]
    assert "range.counts[0].birds: 536" in best["text"]


def test_the_records_option_makes_each_array_element_a_document(api: Api) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    birds = json.dumps([{"_id": "c", "name": "crane"}, {"_id": "h", "name": "heron"}]).encode()
    files = [("files", ("birds.json", birds, "application/json"))]
    keyed = {**api.headers(tenant.write_key), "Idempotency-Key": "birds"}
    whole = api.client.post("/v1/namespaces/docs/documents", files=files, headers=keyed)
    assert [d["filename"] for d in whole.json()["documents"]] == ["birds.json"]
    # The option is part of the request: under the same key it is another request.
    again = api.client.post(
        "/v1/namespaces/docs/documents", params={"records": "true"}, files=files, headers=keyed
    )
    assert_problem(again, 422, "idempotency-key-reused")
    split = api.client.post(
        "/v1/namespaces/docs/documents",
        params={"records": "true"},
        files=files,
        headers=api.headers(tenant.write_key),
    )
    assert split.status_code == 202, split.text
    assert [d["filename"] for d in split.json()["documents"]] == ["birds.json#c", "birds.json#h"]
    listed = api.client.get(
        "/v1/namespaces/docs/documents", headers=api.headers(tenant.write_key)
    ).json()
    by_name = {d["filename"]: d for d in listed["items"]}
    assert by_name["birds.json#h"]["metadata"] == {"name": "heron"}
    assert by_name["birds.json#h"]["external_id"] == "h"
    assert by_name["birds.json"]["metadata"] == {}
    bad = api.client.post(
        "/v1/namespaces/docs/documents",
        params={"records": "maybe"},
        files=files,
        headers=api.headers(tenant.write_key),
    )
    assert_problem(bad, 422, "validation-error")
