"""The reaper queues again what a dead worker or a lost message left pending, exactly once."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Document, DocumentState, utcnow
from app.services import documents
from app.services.reaper import requeue_stuck
from app.services.uploads import UploadItem
from tests.app.test_storage import make_tenant_with_namespace
from workers.fairness import HIGHEST, LOWEST

TIMEOUT_S = 600


def add_document(session_factory, namespace, text: str, state: DocumentState, age_s: float) -> str:
    with session_factory() as session:
        result = documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=text.encode(), filename="a.txt")],
            enqueue=lambda _tenant, _ids: None,
        )
        document_id = result.documents[0].document.id
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(state=state, updated_at=utcnow() - dt.timedelta(seconds=age_s))
        )
        session.commit()
    return document_id


def state_of(session_factory: sessionmaker[Session], document_id: str) -> DocumentState:
    with session_factory() as session:
        document = session.get(Document, document_id)
        assert document is not None
        return document.state


def test_stuck_documents_are_queued_again_taken_ones_first(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    parsing = add_document(session_factory, namespace, "a", DocumentState.PARSING, 2 * TIMEOUT_S)
    embedding = add_document(
        session_factory, namespace, "b", DocumentState.EMBEDDING, 2 * TIMEOUT_S
    )
    lost = add_document(session_factory, namespace, "c", DocumentState.QUEUED, 2 * TIMEOUT_S)
    busy = add_document(session_factory, namespace, "d", DocumentState.PARSING, 10)
    done = add_document(session_factory, namespace, "e", DocumentState.INDEXED, 2 * TIMEOUT_S)

    enqueued: list[tuple[str, int]] = []
    requeued = requeue_stuck(
        session_factory,
        older_than_s=TIMEOUT_S,
        enqueue=lambda document_id, priority: enqueued.append((document_id, priority)),
    )

    assert sorted(requeued) == sorted([parsing, embedding, lost])
    assert dict(enqueued) == {parsing: HIGHEST, embedding: HIGHEST, lost: LOWEST}
    assert state_of(session_factory, parsing) == DocumentState.QUEUED
    assert state_of(session_factory, busy) == DocumentState.PARSING
    assert state_of(session_factory, done) == DocumentState.INDEXED
    # The clock restarted: the next round leaves them to the task just sent.
    again = requeue_stuck(session_factory, older_than_s=TIMEOUT_S, enqueue=lambda *_: None)
    assert again == []


def test_racing_reapers_queue_each_document_once(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    stuck = {
        add_document(session_factory, namespace, f"text {i}", DocumentState.PARSING, TIMEOUT_S * 2)
        for i in range(20)
    }
    enqueued: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def enqueue(document_id: str, _priority: int) -> None:
        with lock:
            enqueued.append(document_id)

    def reap(_: int) -> list[str]:
        barrier.wait()
        return requeue_stuck(session_factory, older_than_s=TIMEOUT_S, enqueue=enqueue)

    with ThreadPoolExecutor(4) as pool:
        claimed = [d for batch in pool.map(reap, range(4)) for d in batch]
    assert sorted(claimed) == sorted(stuck)
    assert sorted(enqueued) == sorted(stuck)
