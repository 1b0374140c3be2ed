"""Idempotency keys on SQLite and Postgres: one job per key, however the requests race."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import IdempotencyKey, Job, Namespace, utcnow
from app.errors import IdempotencyKeyReusedError, InvalidRequestError
from app.services import documents, tenants
from app.services.documents import UploadResult
from app.services.idempotency import MAX_KEY_LENGTH, make_claim, request_hash
from app.services.uploads import UploadItem
from retrieval.stores.edge import EdgeStore
from tests.app.test_storage import count, make_tenant_with_namespace


def upload(
    session_factory: sessionmaker[Session],
    namespace: Namespace,
    body: bytes,
    key: str = "key-1",
    enqueued: list[str] | None = None,
) -> UploadResult:
    items = [UploadItem(data=body, filename="a.txt")]
    with session_factory() as session:
        return documents.upload(
            session,
            namespace=namespace,
            items=items,
            enqueue=lambda _tenant, ids: (enqueued if enqueued is not None else []).extend(ids),
            idempotency=make_claim(key, request_hash(namespace.id, items)),
        )


def test_the_same_key_and_body_replay_the_first_answer(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    enqueued: list[str] = []
    first = upload(session_factory, namespace, b"some text", enqueued=enqueued)
    again = upload(session_factory, namespace, b"some text", enqueued=enqueued)
    assert not first.replayed
    assert again.replayed
    assert again.job.id == first.job.id
    assert again.response == first.response
    assert again.documents == []
    assert count(session_factory, Job) == 1
    assert len(enqueued) == 1


def test_the_same_key_with_another_body_is_refused(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    upload(session_factory, namespace, b"some text")
    with pytest.raises(IdempotencyKeyReusedError):
        upload(session_factory, namespace, b"other text")
    assert count(session_factory, Job) == 1


def test_keys_belong_to_their_tenant(session_factory) -> None:
    _, acme = make_tenant_with_namespace(session_factory, "acme")
    _, globex = make_tenant_with_namespace(session_factory, "globex")
    first = upload(session_factory, acme, b"some text")
    other = upload(session_factory, globex, b"some text")
    assert not other.replayed
    assert other.job.id != first.job.id


def test_an_expired_key_is_free_again_and_purged(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    first = upload(session_factory, namespace, b"some text")
    with session_factory() as session:
        session.execute(
            update(IdempotencyKey).values(created_at=utcnow() - dt.timedelta(hours=24, seconds=1))
        )
        session.commit()
    again = upload(session_factory, namespace, b"other text")
    assert not again.replayed
    assert again.job.id != first.job.id
    assert count(session_factory, IdempotencyKey) == 1


def test_racing_requests_with_one_key_make_one_job(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    enqueued: list[str] = []
    barrier = threading.Barrier(6)

    def one_upload(_: int) -> UploadResult:
        barrier.wait()
        return upload(session_factory, namespace, b"the same text", enqueued=enqueued)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one_upload, range(6)))
    assert len({r.job.id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 5
    assert all(r.response == results[0].response for r in results)
    assert count(session_factory, Job) == 1
    assert count(session_factory, IdempotencyKey) == 1
    assert len(enqueued) == 1


@pytest.mark.parametrize("key", ["", "k" * (MAX_KEY_LENGTH + 1)])
def test_a_key_must_have_1_to_255_characters(key: str) -> None:
    with pytest.raises(InvalidRequestError):
        make_claim(key, "0" * 64)


def test_keys_go_with_their_tenant(session_factory, tmp_path) -> None:
    tenant_id, namespace = make_tenant_with_namespace(session_factory)
    upload(session_factory, namespace, b"some text")
    store = EdgeStore(tmp_path / "qdrant")
    with session_factory() as session:
        tenants.delete_tenant(session, tenant_id=tenant_id, store=store)
    store.close()
    assert count(session_factory, IdempotencyKey) == 0
