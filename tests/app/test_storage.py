"""Storage behaviour on SQLite and on Postgres alike (each test runs on both)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import column, func, insert, inspect, select, table

from app.db.migrate import downgrade, upgrade
from app.db.models import (
    ApiKey,
    ConsoleSessionRecord,
    Document,
    Job,
    Namespace,
    Tenant,
    Usage,
    utcnow,
)
from app.db.session import make_engine, normalise_database_url
from app.errors import AuthenticationError, ConflictError, NotFoundError
from app.services import console_sessions, documents, keys, tenants, usage
from app.services.uploads import UploadItem
from retrieval.stores.edge import EdgeStore


def make_tenant_with_namespace(session_factory, name: str = "acme") -> tuple[str, Namespace]:
    with session_factory() as session:
        tenant = tenants.create_tenant(session, name=name, quotas={})
        namespace = Namespace(
            tenant_id=tenant.id, name="docs", embedding_model="m", embedding_dimension=4
        )
        session.add(namespace)
        session.commit()
        return tenant.id, namespace


def count(session_factory, model) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_migrations_go_down_to_nothing_and_back_up(database_url: str) -> None:
    engine = make_engine(database_url)
    downgrade(database_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(database_url)
    assert {"tenants", "api_keys", "namespaces", "documents", "jobs", "usage"} <= set(
        inspect(engine).get_table_names()
    )
    assert "idempotency_keys" in inspect(engine).get_table_names()
    engine.dispose()


def test_migration_0002_numbers_existing_documents_and_goes_back(
    database_url: str, session_factory
) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    engine = make_engine(database_url)

    def document_columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("documents")}

    # The documents table as 0001 made it.
    documents_0001 = table(
        "documents",
        *(column(name) for name in ("id", "tenant_id", "namespace_id", "content_hash")),
        *(column(name) for name in ("media_type", "external_id", "metadata", "size_bytes")),
        *(column(name) for name in ("state", "chunk_count", "attempts")),
        *(column(name) for name in ("created_at", "updated_at")),
    )
    try:
        downgrade(database_url, "0001")
        assert "idempotency_keys" not in inspect(engine).get_table_names()
        assert "version" not in document_columns()
        with engine.begin() as conn:
            conn.execute(
                insert(documents_0001).values(
                    id="d1",
                    tenant_id=namespace.tenant_id,
                    namespace_id=namespace.id,
                    content_hash="h",
                    media_type="text/plain",
                    external_id="policy",
                    metadata="{}",
                    size_bytes=1,
                    state="indexed",
                    chunk_count=1,
                    attempts=1,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
        upgrade(database_url)
        assert "version" in document_columns()
        assert "idempotency_keys" in inspect(engine).get_table_names()
        with session_factory() as session:
            assert session.scalars(select(Document.version)).all() == [1]
        downgrade(database_url, "0001")
        assert "version" not in document_columns()
    finally:
        upgrade(database_url)  # the next test on this database needs the whole schema
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert normalise_database_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalise_database_url("postgres://u@h/db").startswith("postgresql+psycopg://")
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_only_a_hash_of_the_key_is_stored_and_revocation_is_immediate(session_factory) -> None:
    with session_factory() as session:
        row, plaintext = keys.create_key(session, tenant_id=None, name="p", scopes=[])
        session.commit()
    secret = plaintext.split("_", 2)[2]
    with session_factory() as session:
        stored = session.get(ApiKey, row.id)
        assert stored is not None
        assert secret not in stored.secret_hash
        assert keys.authenticate(session, plaintext).is_platform
        keys.revoke_key(session, key_id=row.id)
        session.commit()
    with session_factory() as session, pytest.raises(AuthenticationError):
        keys.authenticate(session, plaintext)


def test_racing_uploads_of_the_same_content_make_one_document(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    enqueued: list[str] = []
    barrier = threading.Barrier(6)

    def one_upload(_: int) -> list[tuple[str, bool]]:
        barrier.wait()
        with session_factory() as session:
            result = documents.upload(
                session,
                namespace=namespace,
                items=[UploadItem(data=b"the same text", filename="a.txt")],
                enqueue=lambda _tenant, ids: enqueued.extend(ids),
            )
            return [(d.document.id, d.duplicate) for d in result.documents]

    with ThreadPoolExecutor(6) as pool:
        results = [r for batch in pool.map(one_upload, range(6)) for r in batch]
    assert len({doc_id for doc_id, _ in results}) == 1
    assert sorted(dup for _, dup in results) == [False] + [True] * 5
    assert count(session_factory, Document) == 1
    assert count(session_factory, Job) == 6
    assert len(enqueued) == 1


def test_deleting_a_tenant_cascades_to_everything_it_owns(session_factory, tmp_path) -> None:
    tenant_id, namespace = make_tenant_with_namespace(session_factory)
    with session_factory() as session:
        keys.create_key(session, tenant_id=tenant_id, name="k", scopes=["query"])
        session.commit()
        documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=b"text", filename="a.txt")],
            enqueue=lambda _tenant, _ids: None,
        )
        usage.record_usage(session, tenant_id=tenant_id, key_id="k1")
        session.commit()
    store = EdgeStore(tmp_path / "qdrant")
    with session_factory() as session:
        tenants.delete_tenant(session, tenant_id=tenant_id, store=store)
    store.close()
    for model in (Tenant, ApiKey, Namespace, Document, Job, Usage):
        assert count(session_factory, model) == 0, model.__name__


def test_concurrent_usage_records_lose_no_count(session_factory) -> None:
    tenant_id, _ = make_tenant_with_namespace(session_factory)
    barrier = threading.Barrier(8)

    def record(_: int) -> None:
        barrier.wait()
        with session_factory() as session:
            usage.record_usage(session, tenant_id=tenant_id, key_id="k", prompt_tokens=2)
            session.commit()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, range(8)))
    with session_factory() as session:
        [row] = usage.usage_for_tenant(session, tenant_id=tenant_id)
    assert (row.requests, row.prompt_tokens) == (8, 16)


def test_the_ledger_adds_rejections_beside_requests(session_factory) -> None:
    tenant_id, _ = make_tenant_with_namespace(session_factory)
    ledger = usage.UsageLedger(session_factory)
    ledger.reject(tenant_id=tenant_id, key_id="k")
    ledger.flush()  # inserts the day's row
    ledger.add(tenant_id=tenant_id, key_id="k", prompt_tokens=3)
    ledger.reject(tenant_id=tenant_id, key_id="k")
    ledger.flush()  # adds to it
    with session_factory() as session:
        [row] = usage.usage_for_tenant(session, tenant_id=tenant_id)
    assert (row.requests, row.prompt_tokens, row.rejected) == (1, 3, 2)


def test_console_sessions_open_end_and_expire(session_factory) -> None:
    tenant_id, _ = make_tenant_with_namespace(session_factory)
    with session_factory() as session:
        key, _ = keys.create_key(session, tenant_id=tenant_id, name="admin", scopes=["admin"])
        key_id = key.id
        session.commit()
        first = console_sessions.open_session(session, key_id=key_id, ttl_s=60)
        second = console_sessions.open_session(session, key_id=key_id, ttl_s=60)
        brief = console_sessions.open_session(session, key_id=key_id, ttl_s=-1)  # expired
        assert console_sessions.is_open(session, session_id=first, key_id=key_id)
        assert not console_sessions.is_open(session, session_id=first, key_id="another")
        assert not console_sessions.is_open(session, session_id=brief, key_id=key_id)
        console_sessions.end_session(session, session_id=first)
        assert not console_sessions.is_open(session, session_id=first, key_id=key_id)
        assert console_sessions.is_open(session, session_id=second, key_id=key_id)
        console_sessions.open_session(session, key_id=key_id, ttl_s=60)  # purges the expired
    assert count(session_factory, ConsoleSessionRecord) == 2
    with session_factory() as session:  # the key's rows go with it
        session.delete(session.get(ApiKey, key_id))
        session.commit()
    assert count(session_factory, ConsoleSessionRecord) == 0


def test_tenant_names_are_unique_on_every_database(session_factory) -> None:
    make_tenant_with_namespace(session_factory, "acme")
    with session_factory() as session, pytest.raises(ConflictError):
        tenants.create_tenant(session, name="acme", quotas={})


def test_upload_into_a_namespace_deleted_meanwhile_is_not_found(session_factory) -> None:
    _, namespace = make_tenant_with_namespace(session_factory)
    with session_factory() as session:
        session.delete(session.get(Namespace, namespace.id))
        session.commit()
    with session_factory() as session, pytest.raises(NotFoundError):
        documents.upload(
            session,
            namespace=namespace,
            items=[UploadItem(data=b"text", filename="a.txt")],
            enqueue=lambda _tenant, _ids: None,
        )
