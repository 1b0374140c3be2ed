"""The ONNX int8 backend behind the whole platform, and namespaces that refuse vectors from
another backend: the namespace records the embedder's model id, and int8 vectors never go
beside torch's (nor torch's beside int8's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import CallToolResult

from app.db.models import Namespace
from app.errors import EmbeddingModelMismatchError
from app.gateway.problems import problem_for
from app.services import documents, namespaces
from app.services.keys import TenantAccess
from app.services.uploads import UploadItem
from ingestion.embedder import ModelEmbedder
from ingestion.onnx_embedder import OnnxEmbedder
from tests.api.conftest import make_namespace, make_tenant, mcp_in_process, upload, wait_for_job
from tests.conftest import Api, make_settings, start_api

pytestmark = pytest.mark.slow

OTTERS = {
    "filename": "otters.txt",
    "text": "Sea otters hold hands while they sleep so that they do not drift apart on the water.",
}
LANTERNFISH = {
    "filename": "fish.txt",
    "text": "Lanternfish migrate to the surface of the ocean every night to feed on plankton.",
}


@pytest.fixture
def int8_api(tmp_path: Path, sqlite_url: str, onnx_int8: OnnxEmbedder) -> Iterator[Api]:
    """The app with the model on ONNX Runtime in int8 (``SHOAL_EMBEDDING__ONNX_PRECISION``)."""
    yield from start_api(make_settings(tmp_path, sqlite_url), onnx_int8)


def test_the_int8_backend_indexes_and_answers_through_the_platform(int8_api: Api) -> None:
    tenant = make_tenant(int8_api, "acme")
    created = make_namespace(int8_api, tenant, "docs")
    assert created["embedding_model"] == "all-MiniLM-L6-v2+onnx-int8"
    accepted = upload(int8_api, tenant, "docs", [OTTERS, LANTERNFISH])
    assert wait_for_job(int8_api, tenant, accepted["job_id"])["state"] == "succeeded"
    for question, expected in (
        ("Why do sea otters hold hands?", "otters.txt"),
        ("When do lanternfish feed?", "fish.txt"),
    ):
        found = int8_api.client.post(
            "/v1/namespaces/docs/search",
            json={"question": question, "top_k": 1},
            headers=int8_api.headers(tenant.query_key),
        )
        assert found.status_code == 200, found.text
        [passage] = found.json()["passages"]
        assert passage["filename"] == expected


def test_a_namespace_indexed_by_torch_refuses_int8_vectors(
    int8_api: Api, embedder: ModelEmbedder
) -> None:
    tenant = make_tenant(int8_api, "acme")
    with int8_api.platform.sessions() as session:
        namespace = namespaces.create_namespace(  # as a server on torch made it
            session,
            tenant_id=tenant.id,
            name="docs",
            embedding_model=embedder.model_id,
            embedding_dimension=embedder.dimension,
            indexed_fields={},
            routes={},
            store=int8_api.platform.store,
        )
        collection = namespace.collection

    # The API refuses at the door: uploads, searches and questions alike.
    refused = [
        int8_api.client.post(
            "/v1/namespaces/docs/documents",
            json={"documents": [OTTERS]},
            headers=int8_api.headers(tenant.write_key),
        ),
        int8_api.client.post(
            "/v1/namespaces/docs/search",
            json={"question": "Why do sea otters hold hands?"},
            headers=int8_api.headers(tenant.query_key),
        ),
        int8_api.client.post(
            "/v1/namespaces/docs/query",
            json={"question": "Why do sea otters hold hands?"},
            headers=int8_api.headers(tenant.query_key),
        ),
        int8_api.client.post(
            "/v1/namespaces/docs/query",
            json={"question": "Why do sea otters hold hands?", "stream": True},
            headers=int8_api.headers(tenant.query_key),
        ),
    ]
    for response in refused:
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith("/problems/embedding-model-mismatch")
        assert "'all-MiniLM-L6-v2+onnx-int8'" in problem["detail"]

    # The MCP door refuses alike: its tool errors carry the same problem.
    async def add(client: Client) -> list[CallToolResult]:
        return [
            await client.call_tool("add_documents", {"namespace": "docs", "documents": [OTTERS]})
        ]

    async def ask(client: Client) -> list[CallToolResult]:
        question = "Why do sea otters hold hands?"
        return [
            await client.call_tool("search", {"namespace": "docs", "query": question}),
            await client.call_tool("answer", {"namespace": "docs", "question": question}),
        ]

    tool_errors = [
        *mcp_in_process(int8_api, tenant.write_key, add),
        *mcp_in_process(int8_api, tenant.query_key, ask),
    ]
    for tool_error in tool_errors:
        assert tool_error.is_error, tool_error
        assert tool_error.structured_content is not None
        assert tool_error.structured_content["type"] == "/problems/embedding-model-mismatch"
        assert "'all-MiniLM-L6-v2+onnx-int8'" in tool_error.structured_content["detail"]

    # The OpenAI door refuses alike (its embeddings too), in OpenAI's error shape.
    chat = {"model": "docs", "messages": [{"role": "user", "content": "Why do otters?"}]}
    door = [
        ("/v1/openai/chat/completions", chat),
        ("/v1/openai/chat/completions", {**chat, "stream": True}),
        ("/v1/openai/embeddings", {"model": "docs", "input": "Why do sea otters hold hands?"}),
    ]
    for path, body in door:
        response = int8_api.client.post(path, json=body, headers=int8_api.headers(tenant.query_key))
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("conflict_error", "embedding-model-mismatch")
        assert "'all-MiniLM-L6-v2+onnx-int8'" in error["message"]

    # A worker whose model is not the namespace's (settings changed after an upload was
    # accepted, or workers of two settings) fails the document with the reason, and writes
    # nothing into the collection.
    with int8_api.platform.sessions() as session:
        stored = namespaces.get_namespace(session, access=TenantAccess(tenant.id), name="docs")
        result = documents.upload(
            session,
            namespace=stored,
            items=[UploadItem(OTTERS["text"].encode(), OTTERS["filename"])],
            enqueue=int8_api.platform.enqueue,
            ingestion=int8_api.platform.settings.ingestion,
        )
    job = wait_for_job(int8_api, tenant, result.response["job_id"])
    assert job["state"] == "failed"
    [document] = job["documents"]
    assert document["state"] == "failed"
    assert "'all-MiniLM-L6-v2'" in document["reason"]
    assert "'all-MiniLM-L6-v2+onnx-int8'" in document["reason"]
    assert int8_api.platform.store.count(collection, where={"tenant_id": tenant.id}) == 0


def test_a_mismatch_is_a_409_embedding_model_mismatch_naming_both_models() -> None:
    namespace = Namespace(name="docs", embedding_model="all-MiniLM-L6-v2+onnx-int8")
    namespaces.check_embedding_model(namespace, "all-MiniLM-L6-v2+onnx-int8")
    with pytest.raises(EmbeddingModelMismatchError) as refused:
        namespaces.check_embedding_model(namespace, "all-MiniLM-L6-v2")
    problem = problem_for(refused.value)
    assert problem is not None
    assert (problem.status, problem.uri) == (409, "/problems/embedding-model-mismatch")
    assert "SHOAL_EMBEDDING__ONNX_PRECISION" in str(refused.value)
