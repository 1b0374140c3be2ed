"""Shared fixtures: real databases (SQLite and Postgres), the real model, the app over HTTP.

Postgres: a fresh database per test session at SHOAL_TEST_POSTGRES_URL's server (default
``postgresql://postgres@127.0.0.1:5432/postgres``), built by Alembic so migrations run every
time, truncated after each test (indexing threads must see committed rows, so no rollback
savepoints). A server that is down fails the fixture, saying how to start it.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade
from app.db.models import Base
from app.db.session import make_engine, make_session_factory, normalise_database_url
from app.main import create_app
from app.platform import Platform, build_platform
from app.services import keys
from app.settings import Settings
from ingestion.config import EmbeddingConfig
from ingestion.embedder import SentenceTransformerEmbedder

POSTGRES_URL = os.environ.get(
    "SHOAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Hypothesis: HYPOTHESIS_PROFILE=ci for more examples. No deadline: examples that reach the real
# tokenizer vary in time on a busy machine, and no test gates on wall-clock time.
hypothesis_settings.register_profile("dev", max_examples=50, deadline=None)
hypothesis_settings.register_profile("ci", max_examples=200, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real bundled MiniLM, loaded once for the whole run."""
    model = SentenceTransformerEmbedder(EmbeddingConfig())
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session; dropped at the end."""
    admin_url = make_url(normalise_database_url(POSTGRES_URL))
    name = f"shoal_test_{uuid.uuid4().hex[:12]}"
    conninfo = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"Postgres is not reachable at {POSTGRES_URL} ({exc}); start it: {START_POSTGRES}"
        )
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _truncate(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs twice: on a new SQLite file and on the session's Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shoal.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("postgres_database")
    yield url
    _truncate(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shoal.db'}"
    upgrade(url)
    return url


@pytest.fixture
def session_factory(database_url: str):
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@dataclass
class Api:
    """The app over HTTP, its platform, and a platform key to start from."""

    client: TestClient
    platform: Platform
    platform_key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.platform_key}"}


def make_settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url)


def start_api(settings: Settings, embedder: SentenceTransformerEmbedder) -> Iterator[Api]:
    platform = build_platform(settings, embedder=embedder)
    with platform.sessions() as session:
        _, platform_key = keys.create_key(session, tenant_id=None, name="test", scopes=[])
        session.commit()
    app = create_app(settings, platform=platform)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client=client, platform=platform, platform_key=platform_key)
    platform.close()


@pytest.fixture
def api(tmp_path: Path, sqlite_url: str, embedder: SentenceTransformerEmbedder) -> Iterator[Api]:
    """The app on SQLite and Qdrant Edge under a temporary data dir."""
    yield from start_api(make_settings(tmp_path, sqlite_url), embedder)


@pytest.fixture
def api_any_db(
    tmp_path: Path, database_url: str, embedder: SentenceTransformerEmbedder
) -> Iterator[Api]:
    """The app on SQLite, then on Postgres."""
    yield from start_api(make_settings(tmp_path, database_url), embedder)
