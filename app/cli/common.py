"""What every ``shoal`` command shares: the consoles, common options, the database session,
and how a command fails (exit 2, the error on stderr)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

from app.settings import Settings, get_settings

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UrlOpt = Annotated[str, typer.Option(envvar="SHOAL_URL", help="Server URL.")]
KeyOpt = Annotated[str, typer.Option(envvar="SHOAL_API_KEY", help="API key.", show_default=False)]


def upgrade_db(settings: Settings) -> None:
    from app.db.migrate import upgrade

    upgrade(settings.resolved_database_url)


def open_session(settings: Settings | None = None, *, migrate: bool = True) -> Any:
    from app.db.session import make_engine, make_session_factory

    settings = settings or get_settings()
    if migrate:
        upgrade_db(settings)
    return make_session_factory(make_engine(settings.resolved_database_url))()


def or_exit(action: Any) -> Any:
    from app.errors import ShoalError

    try:
        return action()
    except ShoalError as exc:
        fail(str(exc))


def emit(value: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(value, indent=2, default=str))
    else:
        out.print(value)


def need_key(api_key: str) -> str:
    if not api_key:
        fail("set SHOAL_API_KEY or pass --api-key")
    return api_key


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)
