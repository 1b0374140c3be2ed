"""Real outages under the running app: Redis killed while queries flow, Postgres restarted.

Each test starts its PRIVATE server on a free port (a ``redis-server`` process; a Postgres
cluster made by ``initdb`` in a temporary directory) and kills or restarts that one: the
shared servers other tests use are never touched. Teardown stops the private servers whatever
the outcome.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from app.db.migrate import upgrade
from app.settings import Settings
from ingestion.embedder import ModelEmbedder
from tests.api.conftest import (
    Tenant,
    assert_problem,
    make_namespace,
    make_tenant,
    upload,
    wait_for_job,
)
from tests.conftest import Api, free_port, start_api
from tests.services import PrivateRedis

pytestmark = pytest.mark.slow

OTTERS = {
    "filename": "otters.txt",
    "text": "Sea otters hold hands while they sleep so that they do not drift apart on the water. "
    "A group of resting otters is called a raft.",
}
QUESTION = "What is a group of resting sea otters called?"


def _ready(tenant: Tenant, api: Api) -> None:
    make_namespace(api, tenant, "docs")
    accepted = upload(api, tenant, "docs", [OTTERS])
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"


def ask(api: Api, tenant: Tenant, question: str) -> tuple[int, dict[str, object], float]:
    started = time.perf_counter()
    response = api.client.post(
        "/v1/namespaces/docs/query",
        json={"question": question},
        headers=api.headers(tenant.query_key),
    )
    elapsed = time.perf_counter() - started
    body = response.json() if response.status_code == 200 else {"text": response.text}
    return response.status_code, body, elapsed


# --- Redis --------------------------------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_api(
    tmp_path: Path, sqlite_url: str, embedder: ModelEmbedder, private_redis
) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path, database_url=sqlite_url, redis_url=private_redis.url, enable_faults=True
    )
    yield from start_api(settings, embedder)


def test_queries_keep_answering_while_redis_is_killed(
    redis_api: Api, private_redis: PrivateRedis
) -> None:
    api = redis_api
    tenant = make_tenant(api, "acme")
    _ready(tenant, api)
    status, body, _ = ask(api, tenant, QUESTION)
    assert (status, body["degraded"]) == (200, False)
    shared = redis.Redis.from_url(private_redis.url)
    assert shared.dbsize() > 0  # embedding vectors, the answer, its generation
    drill = {"target": "cache", "mode": "delay", "delay_ms": 1}
    assert api.client.post("/v1/admin/faults", json=drill, headers=api.headers()).status_code == 201
    assert shared.hlen("shoal:faults") == 1  # where every replica reads it
    assert api.client.delete("/v1/admin/faults", headers=api.headers()).status_code == 204
    shared.close()

    results: list[tuple[int, dict[str, object], float]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        n = 0
        while not stop.is_set():
            n += 1  # a new question each time: a cache lookup (Redis) every time
            results.append(ask(api, tenant, f"{QUESTION} ({n})"))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        time.sleep(0.5)
        private_redis.stop()
        killed_at = len(results)
        time.sleep(2.0)
    finally:
        stop.set()
        asker.join(30)
    assert len(results) > killed_at + 2, "no query finished after Redis was killed"
    for status, body, elapsed in results:
        assert status == 200, body
        assert body["degraded"] is False
        assert body["answerable"] is True
        assert elapsed < 5, elapsed  # one Redis timeout (0.25 s) per cool-down at most
    print(  # noqa: T201 (the figure)
        f"\n{len(results)} queries, {len(results) - killed_at} after the kill; slowest "
        f"{max(e for _, _, e in results) * 1000:.0f} ms"
    )
    # The shared fault registry is Redis: drills are refused while it is down.
    response = api.client.post(
        "/v1/admin/faults", json={"target": "cache", "mode": "error"}, headers=api.headers()
    )
    assert_problem(response, 503, "faults-unavailable")

    private_redis.start()  # back, empty: the platform uses it again after the cool-down
    status, body, _ = ask(api, tenant, QUESTION)
    assert (status, body["answerable"]) == (200, True)


# --- Postgres -----------------------------------------------------------------------------------


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [
        p for p in [shutil.which(name)] if p
    ]
    if not found:
        pytest.fail(f"{name} not found: install the Postgres server binaries")
    return found[-1]


@dataclass
class PrivatePostgres:
    """A throwaway Postgres cluster in a temporary directory, on a free port."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(
            _postgres_bin("initdb"), "-D", str(self.root / "data"), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.root / "data"), "-o", options,
            "-l", str(self.root / "log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"
        )

    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not tmp_path: the postgres user must reach the directory, and pytest's is root's alone.
    root = Path(tempfile.mkdtemp(prefix="shoal-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_api(
    tmp_path: Path, embedder: ModelEmbedder, private_postgres: PrivatePostgres
) -> Iterator[Api]:
    upgrade(private_postgres.url)
    settings = Settings(data_dir=tmp_path, database_url=private_postgres.url)
    yield from start_api(settings, embedder)


def test_a_postgres_restart_answers_503_while_down_and_recovers_without_a_restart(
    postgres_api: Api, private_postgres: PrivatePostgres
) -> None:
    api = postgres_api
    tenant = make_tenant(api, "acme")
    _ready(tenant, api)
    namespaces = "/v1/namespaces"
    assert api.client.get(namespaces, headers=api.headers(tenant.admin_key)).status_code == 200

    private_postgres.stop()
    try:
        for response in (
            api.client.get(namespaces, headers=api.headers(tenant.admin_key)),
            api.client.get("/v1/admin/tenants", headers=api.headers()),
            api.client.post(
                "/v1/namespaces/docs/query",
                json={"question": QUESTION},
                headers=api.headers(tenant.query_key),
            ),
            # The MCP door reads the key from the same database, before the SDK runs.
            api.client.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={
                    **api.headers(tenant.query_key),
                    "Accept": "application/json, text/event-stream",
                },
            ),
        ):
            problem = assert_problem(response, 503, "database-unavailable")
            assert "Retry-After" in response.headers
            assert "SELECT" not in problem["detail"]  # the driver's SQL stays in the log
        assert api.client.get("/readyz").status_code == 503
    finally:
        private_postgres.start()

    # The pool's connections died with the server; pre-ping replaces them on the next checkout.
    assert api.client.get(namespaces, headers=api.headers(tenant.admin_key)).status_code == 200
    status, body, _ = ask(api, tenant, QUESTION)
    assert (status, body["answerable"]) == (200, True)
    assert api.client.get("/readyz").status_code == 200
