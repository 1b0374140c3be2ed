"""The adapter stack delegates: readiness and shutdown speak to the outermost layer (breaker,
timeouts, fault drill) and reach the real adapter underneath, never by unwrapping a layer.

Real components throughout: the embedded store under a temporary data dir, a private
``redis-server`` for the caches, the limiter and the fault registry (so counting its clients
counts this platform's alone), and the platform the server builds, with fault drills on.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.guards.drills import FaultyAnswerCache, FaultyCache
from app.platform import build_platform
from app.services.limits import Quotas
from app.settings import Settings
from ingestion.embedder import SentenceTransformerEmbedder
from retrieval.stores import embedded_root
from tests.conftest import Api, start_api
from tests.services import PrivateRedis


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def drilled_settings(tmp_path: Path, sqlite_url: str, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        redis_url=redis_url,
        enable_faults=True,
        cache={"redis_timeout_s": 0.2, "redis_connect_timeout_s": 0.2, "cooldown_s": 0.1},
        limits={"redis_timeout_s": 0.2},
    )


def other_clients(observer: redis.Redis) -> int:
    """Connections to the private Redis other than ``observer``'s own."""
    return len(observer.client_list()) - 1


def test_closing_the_platform_closes_each_redis_client_under_its_fault_drill(
    tmp_path: Path, sqlite_url: str, embedder: SentenceTransformerEmbedder, private_redis
) -> None:
    platform = build_platform(
        drilled_settings(tmp_path, sqlite_url, private_redis.url), embedder=embedder
    )
    # The caches the platform holds are the drills' wrappers, not the Redis clients.
    assert isinstance(platform.query.cache, FaultyCache)
    assert isinstance(platform.query.answers, FaultyAnswerCache)
    observer = redis.Redis.from_url(private_redis.url)
    try:
        assert other_clients(observer) == 0
        # Every Redis user of the platform opens its connection.
        assert platform.readiness()[1]["cache"] == "ok"  # the embedding cache
        assert platform.query.answers.generation("ns") == 0  # the answer cache
        assert platform.faults is not None
        assert platform.faults.active() == []  # the fault registry
        quotas = Quotas("t", "k", tenant={"requests_per_minute": 10})
        assert platform.limits.admit(quotas) is not None  # the shared limiter
        assert other_clients(observer) >= 4

        platform.close()

        deadline = time.monotonic() + 5
        while other_clients(observer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other_clients(observer) == 0, observer.client_list()
    finally:
        observer.close()


def test_readiness_sees_the_real_store_and_cache_fail_through_every_layer(
    tmp_path: Path, sqlite_url: str, embedder: SentenceTransformerEmbedder, private_redis
) -> None:
    settings = drilled_settings(tmp_path, sqlite_url, private_redis.url)
    for api in start_api(settings, embedder):
        checks = readiness(api)
        assert (checks["vector_store"], checks["cache"]) == ("ok", "ok")

        # A drill fails the ping as the outage would (the layer itself answers).
        drill = {"target": "cache", "mode": "error"}
        assert api.client.post("/v1/admin/faults", json=drill, headers=api.headers()).is_success
        assert readiness(api)["cache"] == "degraded: injected fault: cache (POST /v1/admin/faults)"
        assert api.client.delete("/v1/admin/faults", headers=api.headers()).status_code == 204
        assert readiness(api)["cache"] == "ok"

        # The real adapters fail underneath: breaker → drill → embedded store; drill → Redis.
        root = embedded_root(tmp_path)
        shutil.rmtree(root, ignore_errors=True)
        root.write_text("a file where the store's directory should be")
        private_redis.stop()
        checks = readiness(api)
        assert checks["vector_store"].startswith(f"degraded: vector store root {root} unusable")
        assert checks["cache"].startswith("degraded: Redis embedding cache failed")

        root.unlink()  # the store's directory may come back: the next ping makes it
        assert readiness(api)["vector_store"] == "ok"


def readiness(api: Api) -> dict[str, str]:
    """``/readyz``'s checks; the replica stays ready whatever they say of store and cache."""
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks: dict[str, str] = ready.json()["checks"]
    return checks
