"""``shoal``: serve, migrate, administer (on the database directly), and client commands.

One module per group: :mod:`app.cli.server` (``serve``, ``worker``), :mod:`app.cli.admin`
(``db``, ``admin``: on the configured database, like a migration tool, so an operator can
create the first tenant before any server runs), :mod:`app.cli.client` (``ingest``, ``query``:
HTTP to ``SHOAL_URL`` with ``SHOAL_API_KEY``), :mod:`app.cli.evaluate` (``eval``). This module
assembles them, in the order ``shoal --help`` lists them.
"""

from __future__ import annotations

import typer

from app.cli import client, evaluate, server
from app.cli.admin import admin_app, db_app

app = typer.Typer(help="Shoal: multi-tenant retrieval-augmented generation.", no_args_is_help=True)
app.command()(server.serve)
app.command()(server.worker)
app.command()(client.ingest)
app.command()(client.query)
app.command("eval")(evaluate.eval_beir)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")


def main() -> None:
    app()
