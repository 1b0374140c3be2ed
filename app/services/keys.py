"""API keys: ``shoal_<id>_<secret>``, only a SHA-256 of the secret stored, shown once.

The secret is 256 random bits, so a fast hash is enough: there is nothing to brute-force, and a
slow KDF would cost every request milliseconds. Lookups go by id; the hash is compared in
constant time. Keys are read from the database on every request (no cache), so a revocation
refuses the very next request on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Namespace, Tenant, utcnow
from app.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)

PREFIX = "shoal"
PLATFORM = "platform"
ADMIN = "admin"
WRITE = "write"
QUERY = "query"
TENANT_SCOPES = frozenset({ADMIN, WRITE, QUERY})
# An admin manages everything in its tenant, so it may also upload and ask.
IMPLIED: dict[str, frozenset[str]] = {ADMIN: frozenset({WRITE, QUERY})}


@dataclass(frozen=True)
class TenantAccess:
    """What a tenant key reaches: its tenant, and the names of the namespaces it may use (None:
    all of them).

    Every lookup of a namespace, and of a job by its namespace, takes one
    (:mod:`app.services.namespaces`, :mod:`app.services.jobs`), so a namespace a key may not
    use answers as a missing one, whichever door (HTTP, OpenAI, MCP) the request came through.
    """

    tenant_id: str
    namespaces: frozenset[str] | None = None

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id, its tenant (None for platform keys), its scopes, the
    namespaces it is limited to (None: all), and the per-minute quotas of the key and of its
    tenant (read with the key, in one query)."""

    key_id: str
    tenant_id: str | None
    scopes: frozenset[str]
    key_quotas: Mapping[str, Any] = field(default_factory=dict)
    tenant_quotas: Mapping[str, Any] = field(default_factory=dict)
    namespaces: frozenset[str] | None = None

    @property
    def is_platform(self) -> bool:
        return PLATFORM in self.scopes

    def has(self, scope: str) -> bool:
        return scope in self.scopes or any(scope in IMPLIED.get(s, ()) for s in self.scopes)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}_{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str]:
    """Split a key into id and secret.

    Raises:
        AuthenticationError: the token does not have the key shape.
    """
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret or not key_id.isalnum():
        raise AuthenticationError("malformed API key")
    return key_id, secret


def normalise_scopes(scopes: Iterable[str], *, platform: bool) -> list[str]:
    """Validate and sort scopes.

    Raises:
        InvalidRequestError: an unknown scope, none at all, or ``platform`` on a tenant key.
    """
    wanted = sorted(set(scopes))
    if platform:
        return [PLATFORM]
    if not wanted:
        raise InvalidRequestError("a key needs at least one scope", field="scopes")
    unknown = [s for s in wanted if s not in TENANT_SCOPES]
    if unknown:
        raise InvalidRequestError(
            f"unknown scope(s) {', '.join(unknown)}; tenant keys take admin, write, query",
            field="scopes",
        )
    return wanted


def check_namespaces(
    session: Session, *, tenant_id: str | None, scopes: Sequence[str], names: Iterable[str]
) -> list[str]:
    """Validate the namespaces a new key is limited to, and sort them.

    Admin keys cannot be limited: they manage every namespace and could make an unlimited key
    anyway. Names must be namespaces of the tenant now, so that a typo is an error rather than
    a key that finds nothing (one deleted later stays listed, and a namespace created again
    under its name is reachable again).

    Raises:
        InvalidRequestError: a platform or admin key, no name at all, or a name the tenant has
            no namespace of.
    """
    wanted = sorted(set(names))
    if tenant_id is None or ADMIN in scopes:
        raise InvalidRequestError(
            "only write and query keys can be limited to namespaces: platform and admin keys "
            "manage all of them",
            field="namespaces",
        )
    if not wanted:
        raise InvalidRequestError(
            "give at least one namespace, or leave namespaces out for all of them",
            field="namespaces",
        )
    query = select(Namespace.name).where(
        Namespace.tenant_id == tenant_id, Namespace.name.in_(wanted)
    )
    unknown = sorted(set(wanted) - set(session.scalars(query)))
    if unknown:
        raise InvalidRequestError(
            f"no namespace named {', '.join(map(repr, unknown))} in this tenant",
            field="namespaces",
        )
    return wanted


def create_key(
    session: Session,
    *,
    tenant_id: str | None,
    name: str,
    scopes: Sequence[str],
    quotas: Mapping[str, int] | None = None,
    namespaces: Iterable[str] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext, which is never retrievable again.

    ``tenant_id=None`` makes a ``platform`` key. ``namespaces`` limits a write or query key to
    those of its tenant's namespaces (None: all). The caller commits.

    Raises:
        InvalidRequestError: bad scopes (:func:`normalise_scopes`) or namespaces
            (:func:`check_namespaces`).
    """
    checked_scopes = normalise_scopes(scopes, platform=tenant_id is None)
    limited = (
        None
        if namespaces is None
        else check_namespaces(session, tenant_id=tenant_id, scopes=checked_scopes, names=namespaces)
    )
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        tenant_id=tenant_id,
        name=name,
        scopes=checked_scopes,
        secret_hash=hash_secret(secret),
        quotas=dict(quotas or {}),
        namespaces=limited,
    )
    session.add(row)
    session.flush()
    return row, format_key(key_id, secret)


def install_key(session: Session, *, token: str, name: str) -> ApiKey:
    """Store an operator-chosen platform key (``SHOAL_BOOTSTRAP_KEY``)."""
    key_id, secret = parse_key(token)
    row = ApiKey(
        id=key_id, tenant_id=None, name=name, scopes=[PLATFORM], secret_hash=hash_secret(secret)
    )
    session.add(row)
    session.flush()
    return row


def authenticate(session: Session, token: str) -> Caller:
    """The caller a presented key stands for.

    Raises:
        AuthenticationError: malformed, unknown or revoked key (one message for all three).
    """
    key_id, secret = parse_key(token)
    query = (
        select(ApiKey, Tenant.quotas)
        .outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.id == key_id)
    )
    found = session.execute(query).first()
    row, tenant_quotas = found if found is not None else (None, None)
    presented = hash_secret(secret)
    stored = row.secret_hash if row is not None else hash_secret(secrets.token_urlsafe(32))
    # Compare even for an unknown id, so timing does not tell which ids exist.
    if not hmac.compare_digest(presented, stored) or row is None or row.revoked_at is not None:
        raise AuthenticationError("invalid or revoked API key")
    return _caller(row, tenant_quotas)


def authenticate_key_id(session: Session, key_id: str) -> Caller:
    """The caller of a key proven earlier, looked up again by id: the console signs a key in
    once (:func:`authenticate`), then calls this on every request, so a revocation ends its
    sessions at their next request as it refuses the key's next API request.

    Raises:
        AuthenticationError: no such key, or it is revoked.
    """
    query = (
        select(ApiKey, Tenant.quotas)
        .outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.id == key_id)
    )
    found = session.execute(query).first()
    if found is None or found[0].revoked_at is not None:
        raise AuthenticationError("invalid or revoked API key")
    return _caller(found[0], found[1])


def _caller(row: ApiKey, tenant_quotas: Mapping[str, Any] | None) -> Caller:
    return Caller(
        key_id=row.id,
        tenant_id=row.tenant_id,
        scopes=frozenset(row.scopes),
        key_quotas=dict(row.quotas or {}),
        tenant_quotas=dict(tenant_quotas or {}),
        namespaces=None if row.namespaces is None else frozenset(row.namespaces),
    )


def list_keys(session: Session, *, tenant_id: str) -> list[ApiKey]:
    """A tenant's keys, revoked ones included, oldest first."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, *, key_id: str, caller: Caller | None = None) -> ApiKey:
    """Revoke a key (idempotent); the next request with it is refused. The caller commits.

    ``caller`` None means the operator's CLI. Otherwise the caller must be allowed to manage
    the key's tenant (:func:`authorize_tenant_admin`); a key it may not see is not found.

    Raises:
        PermissionDeniedError: the caller is neither platform nor admin.
        NotFoundError: no such key for this caller.
    """
    if caller is not None:
        row = find_key(session, key_id=key_id, caller=caller)
    elif (row := session.get(ApiKey, key_id)) is None:  # type: ignore[assignment]
        raise NotFoundError("key", key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def update_key_quotas(
    session: Session, *, key_id: str, caller: Caller, quotas: Mapping[str, int | None]
) -> ApiKey:
    """Replace the quota entries given (None removes one; others kept). The caller commits.

    Raises: as :func:`find_key`.
    """
    row = find_key(session, key_id=key_id, caller=caller)
    merged = {**row.quotas, **quotas}
    row.quotas = {name: value for name, value in merged.items() if value is not None}
    return row


def find_key(session: Session, *, key_id: str, caller: Caller) -> ApiKey:
    """A key the caller may manage: any for platform keys, its own tenant's for admin keys.

    Raises:
        PermissionDeniedError: the caller is neither platform nor admin.
        NotFoundError: no such key for this caller (another tenant's is the same).
    """
    if not (caller.is_platform or caller.has(ADMIN)):
        raise PermissionDeniedError("managing keys needs the platform or admin scope")
    row = session.get(ApiKey, key_id)
    if row is None or (not caller.is_platform and row.tenant_id != caller.tenant_id):
        raise NotFoundError("key", key_id)
    return row


def authorize_tenant_admin(caller: Caller, tenant_id: str) -> None:
    """Allow platform keys, and admin keys of ``tenant_id`` itself.

    The scope is checked first, so the answer to a key without it never depends on whether the
    tenant exists; an admin of another tenant gets the same 404 as for a missing tenant.

    Raises:
        PermissionDeniedError: neither platform nor admin scope.
        NotFoundError: an admin key of another tenant.
    """
    if caller.is_platform:
        return
    if not caller.has(ADMIN):
        raise PermissionDeniedError("this action needs the platform or admin scope")
    if caller.tenant_id != tenant_id:
        raise NotFoundError("tenant", tenant_id)


def authorize_tenant_scope(caller: Caller, scope: str) -> TenantAccess:
    """What the caller reaches in its tenant, if its key has ``scope`` there.

    Raises:
        PermissionDeniedError: a platform key (it belongs to no tenant) or a missing scope.
    """
    if caller.tenant_id is None:
        raise PermissionDeniedError(
            "platform keys belong to no tenant; create a tenant key with POST "
            "/v1/admin/tenants/{tenant_id}/keys"
        )
    if not caller.has(scope):
        raise PermissionDeniedError(f"this action needs the {scope!r} scope")
    return TenantAccess(caller.tenant_id, caller.namespaces)


def has_any_platform_key(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.tenant_id.is_(None)).limit(1)) is not None


def authorize_tenant_reader(caller: Caller) -> TenantAccess:
    """What the caller reaches for reads any tenant scope may make (write or query; admin
    implies both).

    Raises:
        PermissionDeniedError: a platform key, or a key with neither scope.
    """
    return authorize_tenant_scope(caller, QUERY if caller.has(QUERY) else WRITE)
