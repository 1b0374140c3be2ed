"""Idempotency keys: a retried upload answers as the first one did instead of making a new job.

A client that sends ``Idempotency-Key: <key>`` with an upload may send the same request again
(a timeout, a dropped connection) and get the first ``202`` answer back, naming the same job.
Keys belong to the caller's tenant, so two tenants never collide on one. A key identifies one
request: a hash of the namespace and the documents (each one's bytes, name, declared type,
external id and metadata; not the raw body, which a multipart client re-encodes with a new
boundary on every try) is stored with it, and the same key with another hash is refused
(:class:`~app.errors.IdempotencyKeyReusedError`).

The claim is the database's unique constraint on ``(tenant_id, key)``, inserted in the same
transaction as the job (:func:`app.services.documents.upload`): of two concurrent requests
with one key, exactly one commits a job, and the other rolls back and replays its answer.

Keys expire after :data:`KEY_TTL`; an expired key is free again, and expired rows of the tenant
are purged whenever it records a new key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db.models import IdempotencyKey, utcnow
from app.errors import IdempotencyKeyReusedError, InvalidRequestError

if TYPE_CHECKING:  # documents imports this module
    from app.services.uploads import UploadItem

HEADER = "Idempotency-Key"
KEY_TTL = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's key and the hash that tells a retry of it from another request."""

    key: str
    request_hash: str


def request_hash(namespace_id: str, items: Sequence[UploadItem], *, records: bool = False) -> str:
    """What makes two uploads the same request: the namespace, each document's bytes, name,
    declared type, external id and metadata, in order, and the ``records`` option (not the
    raw body: a client retrying a multipart upload encodes it with a new random boundary)."""
    # Mixed in only when set: the hashes of keys stored before the option existed still match.
    digest = hashlib.sha256(namespace_id.encode() + (b"\0records\0" if records else b"\0"))
    for item in items:
        fields = [item.filename, item.declared_type, item.external_id, item.metadata]
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode() + b"\0")
        digest.update(hashlib.sha256(item.data).digest())
    return digest.hexdigest()


def make_claim(key: str, request_hash: str) -> IdempotencyClaim:
    """The claim of the request whose :func:`request_hash` is ``request_hash``, under ``key``.

    Raises:
        InvalidRequestError: the key is empty or longer than :data:`MAX_KEY_LENGTH`.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequestError(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}",
            field=HEADER,
        )
    return IdempotencyClaim(key=key, request_hash=request_hash)


def find_stored(
    session: Session, *, tenant_id: str, claim: IdempotencyClaim
) -> IdempotencyKey | None:
    """The tenant's unexpired row for ``claim.key`` (job and stored answer), or ``None``.

    Raises:
        IdempotencyKeyReusedError: the key was first used for another request.
    """
    row = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id,
            IdempotencyKey.key == claim.key,
            # Compared in SQL: SQLite hands datetimes back without their time zone.
            IdempotencyKey.created_at >= utcnow() - KEY_TTL,
        )
    )
    if row is None:
        return None
    if row.request_hash != claim.request_hash:
        raise IdempotencyKeyReusedError(
            f"the {HEADER} {claim.key!r} was already used for a different request in the last "
            f"{KEY_TTL.total_seconds() / 3600:g} hours; use a new key for a new request"
        )
    return row


def record(
    session: Session, *, tenant_id: str, claim: IdempotencyClaim, job_id: str
) -> IdempotencyKey:
    """Claim ``claim.key`` for ``job_id`` in the session's transaction (its answer set later).

    Flushes at once, so a concurrent holder of the key is found here: on Postgres the insert
    waits for that transaction and then fails. Expired rows of the tenant, this key's included,
    are purged first.

    Raises:
        sqlalchemy.exc.IntegrityError: another transaction holds the key; the caller must roll
            back its own transaction and replay (:func:`find_stored`).
    """
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id,
            IdempotencyKey.created_at < utcnow() - KEY_TTL,
        )
    )
    row = IdempotencyKey(
        tenant_id=tenant_id,
        key=claim.key,
        request_hash=claim.request_hash,
        job_id=job_id,
        response={},  # filled in before the commit, so no other transaction ever sees it empty
    )
    session.add(row)
    session.flush()
    return row
