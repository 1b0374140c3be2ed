"""`shoal admin` acts on the configured database and prints JSON with --json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.db.models import Namespace
from app.db.session import make_engine, make_session_factory
from app.errors import AuthenticationError
from app.services import keys
from app.settings import get_settings

runner = CliRunner()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SHOAL_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def shoal(*args: str) -> Any:  # Any: the command's JSON
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_admin_commands_create_list_and_revoke_on_the_database(database: str) -> None:
    tenant = shoal("admin", "create-tenant", "acme", "--requests-per-minute", "60", "--json")
    assert tenant["quotas"] == {"requests_per_minute": 60}
    assert [t["name"] for t in shoal("admin", "list-tenants", "--json")] == ["acme"]

    made = shoal(
        "admin", "create-key", "--tenant", tenant["id"], "--scopes", "write,query", "--json"
    )
    assert made["scopes"] == ["query", "write"]
    platform = shoal("admin", "create-key", "--platform", "--json")
    assert platform["scopes"] == ["platform"]

    sessions = make_session_factory(make_engine(database))
    with sessions() as session:
        assert keys.authenticate(session, made["key"]).tenant_id == tenant["id"]
    shoal("admin", "revoke-key", made["id"], "--json")
    with sessions() as session, pytest.raises(AuthenticationError):
        keys.authenticate(session, made["key"])


def test_create_key_limits_a_key_to_namespaces(database: str) -> None:
    tenant = shoal("admin", "create-tenant", "acme", "--json")
    sessions = make_session_factory(make_engine(database))
    with sessions() as session:  # the admin commands make no namespaces: the API does
        session.add(
            Namespace(
                tenant_id=tenant["id"],
                name="docs",
                embedding_model="all-MiniLM-L6-v2",
                embedding_dimension=384,
            )
        )
        session.commit()
    args = ["admin", "create-key", "--tenant", tenant["id"], "--scopes", "query"]
    made = shoal(*args, "--namespaces", "docs", "--json")
    assert made["namespaces"] == ["docs"]
    with sessions() as session:
        assert keys.authenticate(session, made["key"]).namespaces == frozenset({"docs"})
    refused = runner.invoke(app, [*args, "--namespaces", "docs,wiki"])
    assert refused.exit_code == 2
    assert "'wiki'" in refused.output


@pytest.mark.parametrize(
    "args",
    [
        ["admin", "create-key", "--scopes", "query"],
        ["admin", "create-key", "--platform", "--tenant", "x"],
        ["admin", "create-key", "--tenant", "no-such-tenant", "--scopes", "query"],
        ["admin", "revoke-key", "no-such-key"],
    ],
)
def test_bad_admin_commands_exit_2_with_a_message(database: str, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error" in result.output


def test_duplicate_tenant_name_is_refused(database: str) -> None:
    shoal("admin", "create-tenant", "acme", "--json")
    result = runner.invoke(app, ["admin", "create-tenant", "acme"])
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_replicas_starting_together_install_the_bootstrap_key_once(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli.server import bootstrap
    from app.db.migrate import upgrade

    token = "shoal_0123456789abcdef_" + "s" * 43
    monkeypatch.setenv("SHOAL_BOOTSTRAP_KEY", token)
    get_settings.cache_clear()
    upgrade(database)
    bootstrap(get_settings())
    # The other replica checked for a platform key before the first one committed.
    monkeypatch.setattr(keys, "has_any_platform_key", lambda _session: False)

    bootstrap(get_settings())  # no IntegrityError: the key is there, that is enough

    with make_session_factory(make_engine(database))() as session:
        assert keys.authenticate(session, token).is_platform
