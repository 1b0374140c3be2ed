"""Indexing's verdicts: a document that kills every worker fails instead of looping, an
indexed document stays indexed, and an upload is recorded even when the broker is down."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from app.db.models import Document, DocumentState, Job, Namespace
from app.services import documents, indexing, tenants
from app.services.uploads import UploadItem
from ingestion.config import ChunkingConfig, IngestionConfig
from ingestion.embedder import ModelEmbedder
from retrieval.stores import EdgeStore

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 3
TEXT = b"Lanternfish migrate to the surface of the ocean every night to feed."


@pytest.fixture
def deps(
    session_factory, tmp_path: Path, embedder: ModelEmbedder
) -> Iterator[indexing.IndexingDeps]:
    store = EdgeStore(tmp_path / "qdrant")
    yield indexing.IndexingDeps(
        sessions=session_factory,
        store=store,
        embedder=embedder,
        chunking=ChunkingConfig(),
        ingestion=IngestionConfig(),
        max_attempts=MAX_ATTEMPTS,
    )
    store.close()


@pytest.fixture
def namespace(session_factory, embedder: ModelEmbedder) -> Namespace:
    with session_factory() as session:
        tenant = tenants.create_tenant(session, name="acme", quotas={})
        namespace = Namespace(
            tenant_id=tenant.id,
            name="docs",
            embedding_model=embedder.model_id,
            embedding_dimension=embedder.dimension,
        )
        session.add(namespace)
        session.commit()
        return namespace


def upload(session_factory, namespace: Namespace, enqueue=lambda _t, _ids: None) -> str:
    with session_factory() as session:
        result = documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=TEXT, filename="fish.txt")],
            enqueue=enqueue,
        )
        return result.documents[0].document.id


def document(session_factory, document_id: str) -> Document:
    with session_factory() as session:
        row: Document | None = session.get(Document, document_id)
        assert row is not None
        return row


def points(deps: indexing.IndexingDeps, namespace: Namespace, document_id: str) -> int:
    return deps.store.count(namespace.collection, where={"document_id": document_id})


def test_a_document_every_try_died_on_fails_instead_of_looping(
    session_factory, deps, namespace
) -> None:
    document_id = upload(session_factory, namespace)
    with session_factory() as session:  # as if MAX_ATTEMPTS workers had died on it
        row = session.get(Document, document_id)
        assert row is not None
        row.state, row.attempts = DocumentState.PARSING, MAX_ATTEMPTS
        session.commit()

    indexing.ingest_document(document_id, deps=deps)

    failed = document(session_factory, document_id)
    assert failed.state == DocumentState.FAILED
    assert failed.reason is not None
    assert f"gave up after {MAX_ATTEMPTS} attempts" in failed.reason
    assert points(deps, namespace, document_id) == 0

    # Uploading it again is a fresh start: its old tries count no more.
    assert upload(session_factory, namespace) == document_id
    indexing.ingest_document(document_id, deps=deps)
    indexed = document(session_factory, document_id)
    assert (indexed.state, indexed.attempts) == (DocumentState.INDEXED, 1)
    assert points(deps, namespace, document_id) == 1


def test_a_late_step_of_an_overlapping_run_never_takes_back_indexed(
    session_factory, deps, namespace
) -> None:
    document_id = upload(session_factory, namespace)
    indexing.ingest_document(document_id, deps=deps)
    assert document(session_factory, document_id).state == DocumentState.INDEXED

    # What a second, overlapping run of the same task does after the first one published.
    for state in (DocumentState.EMBEDDING, DocumentState.QUEUED, DocumentState.FAILED):
        indexing._set_state(deps, document_id, state, reason="late")
    assert document(session_factory, document_id).state == DocumentState.INDEXED
    indexing.ingest_document(document_id, deps=deps)  # a redelivery: nothing to do
    assert points(deps, namespace, document_id) == 1


def test_an_upload_is_recorded_and_accepted_when_the_broker_is_down(
    session_factory, namespace
) -> None:
    def broker_down(_tenant: str, _ids: Sequence[str]) -> None:
        raise ConnectionError("broker unreachable")

    document_id = upload(session_factory, namespace, enqueue=broker_down)

    queued = document(session_factory, document_id)
    assert queued.state == DocumentState.QUEUED  # the reaper sends it when the broker is back
    with session_factory() as session:
        assert session.query(Job).count() == 1
