"""SQLAlchemy 2 models of the platform's metadata. Alembic (``migrations/``) owns the schema.

Ownership cascades in the database (``ON DELETE CASCADE``): deleting a tenant removes its keys,
namespaces, documents, jobs, idempotency keys and usage; deleting a namespace removes its documents
and jobs, and a job's idempotency key goes with it.
Vector collections are dropped by the services, which know their names.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so migrations can refer to them on SQLite and Postgres alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A random UUID string: the primary key of tenants, namespaces, documents and jobs."""
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that reads back timezone-aware (UTC) on every database.

    Postgres keeps the offset; SQLite stores none and reads back naive values, which the API
    would then send without an offset: not an RFC 3339 ``date-time``, and ambiguous to clients.
    Every value written is UTC (:func:`utcnow`), so a naive one read back is UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # JSON columns hold user-supplied objects: a boundary type.
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class DocumentState(enum.StrEnum):
    """A document's life: ``queued → parsing → embedding → indexed | failed``."""

    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"


PENDING_STATES = (DocumentState.QUEUED, DocumentState.PARSING, DocumentState.EMBEDDING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    quotas: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ApiKey(Base):
    """An API key; ``tenant_id`` is null for ``platform`` keys. Stores a hash only."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column()
    secret_hash: Mapped[str] = mapped_column(String(64))
    # The key's own per-minute budgets, on top of its tenant's (app.gateway.limits); {} for none.
    quotas: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Names of the namespaces the key may use (app.services.keys.TenantAccess); None: all.
    namespaces: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class Namespace(Base):
    """A tenant's document collection; its vectors live in :attr:`collection`."""

    __tablename__ = "namespaces"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    embedding_model: Mapped[str] = mapped_column(String(256))
    embedding_dimension: Mapped[int] = mapped_column(Integer)
    indexed_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    routes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Overrides of the server's search defaults (app.schemas.namespaces.SearchSettings); {}: none.
    search: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    @property
    def collection(self) -> str:
        """Vector collection name: from the internal id, never from user text."""
        return "ns_" + self.id.replace("-", "")


class Document(Base):
    """One uploaded document, unique by normalised-content hash within its namespace.

    Documents that share an ``external_id`` are versions of one another, numbered from 1 in
    upload order; :mod:`app.services.versions` keeps only the newest indexed one.
    """

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("namespace_id", "content_hash"),
        UniqueConstraint("namespace_id", "external_id", "version"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    namespace_id: Mapped[str] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), index=True
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(512))
    media_type: Mapped[str] = mapped_column(String(128))
    external_id: Mapped[str | None] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer, default=1)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    size_bytes: Mapped[int] = mapped_column(Integer)
    state: Mapped[DocumentState] = mapped_column(
        Enum(DocumentState, name="document_state", values_callable=lambda e: [m.value for m in e]),
        default=DocumentState.QUEUED,
        index=True,
    )
    reason: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)

    content: Mapped[DocumentContent] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class DocumentContent(Base):
    """The uploaded bytes, kept in the database so any worker on any machine can index them."""

    __tablename__ = "document_contents"

    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)

    document: Mapped[Document] = relationship(back_populates="content")


class Job(Base):
    """One upload request; its state is derived from its documents' states on read."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    namespace_id: Mapped[str] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    # Distinct documents at upload: those since replaced by a newer version or deleted have no
    # job row any more, and the difference tells the client so.
    document_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class JobDocument(Base):
    """A document of a job; ``duplicate`` when the upload matched an existing document."""

    __tablename__ = "job_documents"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    duplicate: Mapped[bool] = mapped_column(default=False)


class Usage(Base):
    """Requests and tokens per tenant, key and UTC day, and the requests the rate limits
    refused (``rejected``: 429s, not counted in ``requests``)."""

    __tablename__ = "usage"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ConsoleSessionRecord(Base):
    """A signed-in console session (:mod:`app.console.session`): open while its row exists.

    ``id`` is the SHA-256 of the session id the cookie carries, so the table alone opens no
    session (the cookie is signed too). Sign-out deletes the row, on every replica at once;
    deleting the key deletes its rows (revoking it ends them at their next request anyway).
    """

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


class IdempotencyKey(Base):
    """The first answer to an upload sent with an ``Idempotency-Key`` header, for replays.

    Unique per tenant and key; ``request_hash`` tells a retry (same namespace and body) from a
    reuse of the key for another request. Rows older than 24 hours are expired and purged.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    response: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
