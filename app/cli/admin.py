"""``shoal db`` and ``shoal admin``: the schema, tenants and keys, on the configured database
directly (like a migration tool), so an operator can create the first tenant before any server
runs."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import JsonOpt, emit, err, fail, open_session, or_exit, upgrade_db
from app.settings import get_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app = typer.Typer(help="Tenants and keys, on the configured database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (idempotent)."""
    upgrade_db(get_settings())
    err.print("database at head")


@admin_app.command("create-tenant")
def create_tenant(
    name: str,
    as_json: JsonOpt = False,
    requests_per_minute: Annotated[int | None, typer.Option(min=1)] = None,
    tokens_per_minute: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Create a tenant."""
    from app.services import tenants

    quotas = {
        k: v
        for k, v in {
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
        }.items()
        if v is not None
    }
    with open_session() as session:
        tenant = or_exit(lambda: tenants.create_tenant(session, name=name, quotas=quotas))
        emit({"id": tenant.id, "name": tenant.name, "quotas": tenant.quotas}, as_json)


@admin_app.command("list-tenants")
def list_tenants(as_json: JsonOpt = False) -> None:
    """List tenants."""
    from app.services import tenants

    with open_session() as session:
        rows = [
            {"id": t.id, "name": t.name, "quotas": t.quotas, "created_at": t.created_at.isoformat()}
            for t in tenants.list_tenants(session)
        ]
    emit(rows, as_json)


@admin_app.command("create-key")
def create_key(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id.")] = None,
    scopes: Annotated[str, typer.Option(help="Comma-separated: admin,write,query.")] = "",
    platform: Annotated[bool, typer.Option("--platform", help="A platform key.")] = False,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    namespaces: Annotated[
        str | None,
        typer.Option(help="Comma-separated: limit a write or query key to these namespaces."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; the whole key is printed once and never again."""
    from app.services import keys, tenants

    if platform == (tenant is not None):
        fail("give exactly one of --tenant ID and --platform")
    with open_session() as session:
        if tenant is not None:
            or_exit(lambda: tenants.get_tenant(session, tenant_id=tenant))
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        limited = None if namespaces is None else [n.strip() for n in namespaces.split(",")]
        row, plaintext = or_exit(
            lambda: keys.create_key(
                session, tenant_id=tenant, name=name, scopes=wanted, namespaces=limited
            )
        )
        session.commit()
        emit(
            {
                "id": row.id,
                "tenant_id": row.tenant_id,
                "scopes": row.scopes,
                "namespaces": row.namespaces,
                "key": plaintext,
            },
            as_json,
        )


@admin_app.command("revoke-key")
def revoke_key(key_id: str, as_json: JsonOpt = False) -> None:
    """Revoke a key; the next request with it is refused."""
    from app.services import keys

    with open_session() as session:
        row = or_exit(lambda: keys.revoke_key(session, key_id=key_id))
        session.commit()
        revoked = row.revoked_at.isoformat() if row.revoked_at else None
        emit({"id": row.id, "revoked_at": revoked}, as_json)
