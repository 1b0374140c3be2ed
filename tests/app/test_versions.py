"""Versions under one external id, on SQLite and Postgres: numbering, publishing, visibility."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Document, DocumentState, Namespace
from app.services import documents, versions
from app.services.uploads import UploadItem
from tests.app.test_storage import make_tenant_with_namespace


def add_version(
    session_factory: sessionmaker[Session],
    namespace: Namespace,
    text: str,
    external_id: str | None,
) -> Document:
    with session_factory() as session:
        result = documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=text.encode(), filename="p.txt", external_id=external_id)],
            enqueue=lambda _tenant, _ids: None,
        )
        return result.documents[0].document


def publish(session_factory: sessionmaker[Session], document_id: str) -> list[str] | None:
    """What indexing's last step does; the ids of the documents it retired."""
    with session_factory() as session:
        document = session.get(Document, document_id)
        assert document is not None
        retired = versions.publish(session, document=document, chunk_count=1)
        session.commit()
    return None if retired is None else [d.id for d in retired]


def rows(session_factory: sessionmaker[Session], external_id: str) -> dict[int, DocumentState]:
    with session_factory() as session:
        found = session.execute(
            select(Document.version, Document.state).where(Document.external_id == external_id)
        ).all()
    return dict(found)


def test_new_content_under_an_external_id_is_its_next_version(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    first = add_version(session_factory, namespace, "policy one", "policy")
    second = add_version(session_factory, namespace, "policy two", "policy")
    again = add_version(session_factory, namespace, "policy two", "policy")
    other = add_version(session_factory, namespace, "handbook one", "handbook")
    unnamed = add_version(session_factory, namespace, "no id", None)
    assert (first.version, second.version, other.version, unnamed.version) == (1, 2, 1, 1)
    assert again.id == second.id  # same content: the duplicate, not a version


def test_racing_uploads_under_one_external_id_get_distinct_versions(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    barrier = threading.Barrier(6)

    def one_upload(n: int) -> int:
        barrier.wait()
        return add_version(session_factory, namespace, f"policy text {n}", "policy").version

    with ThreadPoolExecutor(6) as pool:
        numbers = list(pool.map(one_upload, range(6)))
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


def test_publishing_a_version_retires_the_older_ones(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    v1 = add_version(session_factory, namespace, "policy one", "policy")
    assert publish(session_factory, v1.id) == []
    v2 = add_version(session_factory, namespace, "policy two", "policy")
    v3 = add_version(session_factory, namespace, "policy three", "policy")
    with session_factory() as session:  # v2 failed to index
        session.execute(
            update(Document).where(Document.id == v2.id).values(state=DocumentState.FAILED)
        )
        session.commit()
    assert rows(session_factory, "policy") == {
        1: DocumentState.INDEXED,
        2: DocumentState.FAILED,
        3: DocumentState.QUEUED,
    }
    assert sorted(publish(session_factory, v3.id) or []) == sorted([v1.id, v2.id])
    assert rows(session_factory, "policy") == {3: DocumentState.INDEXED}


def test_an_older_version_finishing_after_a_newer_one_retires_itself(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    v1 = add_version(session_factory, namespace, "policy one", "policy")
    v2 = add_version(session_factory, namespace, "policy two", "policy")
    # v2 finishes first: v1 is still being indexed, so it is left to finish.
    assert publish(session_factory, v2.id) == []
    assert rows(session_factory, "policy") == {1: DocumentState.QUEUED, 2: DocumentState.INDEXED}
    assert publish(session_factory, v1.id) == [v1.id]
    assert rows(session_factory, "policy") == {2: DocumentState.INDEXED}


def test_publishing_a_document_deleted_meanwhile_changes_nothing(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    v1 = add_version(session_factory, namespace, "policy one", "policy")
    with session_factory() as session:
        document = session.get(Document, v1.id)
        assert document is not None
        session.commit()  # SQLite: let the other session write
        with session_factory() as other:
            other.delete(other.get(Document, v1.id))
            other.commit()
        assert versions.publish(session, document=document, chunk_count=1) is None


def test_versions_finishing_at_once_leave_only_the_newest(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    v1 = add_version(session_factory, namespace, "policy one", "policy")
    publish(session_factory, v1.id)
    newer = [add_version(session_factory, namespace, f"policy {n}", "policy") for n in (2, 3, 4)]
    barrier = threading.Barrier(len(newer))

    def finish(document_id: str) -> None:
        barrier.wait()
        publish(session_factory, document_id)

    with ThreadPoolExecutor(len(newer)) as pool:
        list(pool.map(finish, [d.id for d in newer]))
    assert rows(session_factory, "policy") == {4: DocumentState.INDEXED}


def test_only_indexed_documents_are_visible(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    v1 = add_version(session_factory, namespace, "policy one", "policy")
    v2 = add_version(session_factory, namespace, "policy two", "policy")
    ids = {v1.id, v2.id, "no-such-document"}
    with session_factory() as session:
        assert versions.visible_documents(session, ids) == set()
    publish(session_factory, v1.id)
    with session_factory() as session:
        assert versions.visible_documents(session, ids) == {v1.id}
    publish(session_factory, v2.id)
    with session_factory() as session:
        assert versions.visible_documents(session, ids) == {v2.id}
        assert versions.visible_documents(session, []) == set()
