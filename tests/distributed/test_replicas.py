"""Two API replicas and a Celery worker, each its own `shoal serve` / `shoal worker` process, on
the real Postgres, Redis (cache, limits, broker) of this machine: what one replica does, the
other sees.

No Qdrant server runs here, so each process keeps its own Qdrant Edge store (in production they
share a Qdrant server); nothing below depends on sharing points.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade
from app.db.session import make_engine, make_session_factory, normalise_database_url
from app.services import keys
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    RedisScratch,
    free_port,
    start_shoal,
    stop,
    wait_until_serving,
)

pytestmark = pytest.mark.slow


@dataclass
class Replicas:
    a: httpx.Client
    b: httpx.Client
    platform_key: str
    worker_metrics: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.platform_key}"}


def _scratch_database() -> tuple[str, str, str]:
    admin = make_url(normalise_database_url(POSTGRES_URL))
    name = f"shoal_replicas_{uuid.uuid4().hex[:10]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False), conninfo, name


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Started once for the module: three processes take a while to load the model."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    shared = redis.Redis.from_url(REDIS_URL)
    redis_scratch = RedisScratch(REDIS_URL, f"shoal-test:{uuid.uuid4().hex[:12]}:", shared)
    url, conninfo, name = _scratch_database()
    upgrade(url)  # once, before the processes start (each would otherwise race to migrate)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        _, platform_key = keys.create_key(session, tenant_id=None, name="ops", scopes=[])
        session.commit()
    engine.dispose()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SHOAL_DATABASE_URL": url,
        "SHOAL_REDIS_URL": redis_scratch.url,
        "SHOAL_BROKER_URL": redis_scratch.url,
        "SHOAL_WORKERS__QUEUE": redis_scratch.prefix.replace(":", ".") + "index",
        "SHOAL_WORKERS__CONCURRENCY": "2",
        "SHOAL_LIMITS__KEY_PREFIX": redis_scratch.prefix + "limit:",
        "SHOAL_LIMITS__REPLICAS": "2",
        "SHOAL_CACHE__KEY_PREFIX": redis_scratch.prefix + "cache:",
        "SHOAL_LOG_LEVEL": "WARNING",
    }
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []
    try:
        worker_log = tmp_path / "worker.log"
        worker_metrics = free_port()
        worker_env = {
            **env,
            "SHOAL_DATA_DIR": str(tmp_path / "w"),
            "SHOAL_WORKERS__METRICS_PORT": str(worker_metrics),
        }
        processes.append(start_shoal(["worker"], worker_env, worker_log))
        for replica in ("a", "b"):
            port, log = free_port(), tmp_path / f"api-{replica}.log"
            replica_env = {**env, "SHOAL_DATA_DIR": str(tmp_path / replica)}
            processes.append(start_shoal(["serve", "--port", str(port)], replica_env, log))
            base = f"http://127.0.0.1:{port}"
            wait_until_serving(base, processes[-1], log)
            clients.append(httpx.Client(base_url=base, timeout=60))
        yield Replicas(clients[0], clients[1], platform_key, f"http://127.0.0.1:{worker_metrics}")
    finally:
        for client in clients:
            client.close()
        for process in processes:
            stop(process)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if leftovers := redis_scratch.keys():
            shared.delete(*leftovers)
        shared.close()


def _tenant(r: Replicas, name: str) -> tuple[str, str, str]:
    """A tenant made through replica a, and an admin key for it made through replica b."""
    made = r.a.post("/v1/admin/tenants", json={"name": name}, headers=r.auth())
    assert made.status_code == 201, made.text
    tenant_id = made.json()["id"]
    key = r.b.post(
        f"/v1/admin/tenants/{tenant_id}/keys",
        json={"name": "ops", "scopes": ["admin"]},
        headers=r.auth(),
    )
    assert key.status_code == 201, key.text
    return tenant_id, key.json()["id"], key.json()["key"]


def _query_cache_hits(client: httpx.Client) -> float:
    metrics = client.get("/metrics").text
    found = re.search(
        r'^shoal_embedding_cache_requests_total\{result="hit",use="query"\} (\S+)$',
        metrics,
        re.MULTILINE,
    ) or re.search(
        r'^shoal_embedding_cache_requests_total\{use="query",result="hit"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert found, metrics
    return float(found.group(1))


def test_what_one_replica_does_the_other_sees(replicas: Replicas) -> None:
    r = replicas
    _, key_id, key = _tenant(r, "acme")

    # A job created through one replica is indexed by the worker and followed through the other.
    assert r.a.post("/v1/namespaces", json={"name": "docs"}, headers=r.auth(key)).status_code == 201
    accepted = r.a.post(
        "/v1/namespaces/docs/documents",
        json={
            "documents": [{"text": "Sea otters hold hands while they sleep.", "filename": "o.txt"}]
        },
        headers=r.auth(key),
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + 120
    while (job := r.b.get(f"/v1/jobs/{job_id}", headers=r.auth(key)).json())["state"] not in (
        "succeeded",
        "partial",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["state"] == "succeeded", job
    assert job["counts"]["indexed"] == 1
    # The worker exports its own metrics: what it indexed, and the queue autoscalers read.
    worker = httpx.get(r.worker_metrics, timeout=10).text
    assert re.search(r'^shoal_documents_total\{outcome="indexed"\} [1-9]', worker, re.MULTILINE)
    assert re.search(r"^shoal_queue_depth\{queue=", worker, re.MULTILINE)
    assert re.search(r"^shoal_gpu_count ", worker, re.MULTILINE)

    # A question embedded by one replica is a cache hit on the other.
    question = {"question": f"Why do otters hold hands? {uuid.uuid4().hex}"}
    before = _query_cache_hits(r.b)
    assert (
        r.a.post("/v1/namespaces/docs/search", json=question, headers=r.auth(key)).status_code
        == 200
    )
    assert _query_cache_hits(r.b) == before
    assert (
        r.b.post("/v1/namespaces/docs/search", json=question, headers=r.auth(key)).status_code
        == 200
    )
    assert _query_cache_hits(r.b) == before + 1

    # A key revoked through one replica is refused by the other on its next request.
    assert r.b.get("/v1/namespaces", headers=r.auth(key)).status_code == 200
    assert r.a.delete(f"/v1/admin/keys/{key_id}", headers=r.auth()).status_code == 204
    refused = r.b.get("/v1/namespaces", headers=r.auth(key))
    assert refused.status_code == 401


def test_a_rate_limit_is_one_budget_across_replicas(replicas: Replicas) -> None:
    r = replicas
    tenant_id, _, key = _tenant(r, "limited")
    patched = r.b.patch(
        f"/v1/admin/tenants/{tenant_id}",
        json={"quotas": {"requests_per_minute": 5}},
        headers=r.auth(),
    )
    assert patched.status_code == 200, patched.text

    answers = [c.get("/v1/namespaces", headers=r.auth(key)) for c in (r.a, r.b) * 3]

    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    # 5 a minute refill one every 12 s, less what has refilled since the first request.
    assert 8 <= int(answers[-1].headers["Retry-After"]) <= 12
