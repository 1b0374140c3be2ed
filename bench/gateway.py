"""Gateway overhead: authentication, rate limits and routing on a request that does no retrieval.

    python -m bench.gateway [--requests 2000] [--no-distributed]

Each set-up runs ``shoal serve`` in its own process, as users run it:

- embedded: SQLite and the in-process limiter;
- distributed: Postgres and Redis (the shared limiter, one Lua script per request), on the
  local services (a scratch database and a scratch key prefix, removed afterwards).

Baseline, same server, same run: ``GET /healthz``, the HTTP stack alone (uvicorn, the
middlewares, FastAPI's routing, a JSON answer) with no key. Measured:
``GET /v1/namespaces/bench`` with a tenant key whose tenant and key both have quotas, so each
request authenticates (key and quotas in one query), draws from two request buckets and reads
one namespace. Its p50 minus the baseline's is the gateway's overhead. The same work without
HTTP (``authenticate`` + ``admit``, in process) is timed too.

One client, one keep-alive connection, requests one after another: latency, not throughput.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import redis

from app.db.migrate import upgrade
from app.db.session import make_engine, make_session_factory
from app.logging import configure_logging
from app.services import keys, tenants
from app.services.limits import Quotas
from app.settings import Settings
from bench.ingest import describe_machine
from bench.query import percentile
from harness.servers import free_port, start_shoal, stop, wait_or_exit

POSTGRES = "postgresql://postgres@127.0.0.1:5432/"
REDIS = "redis://127.0.0.1:6379/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per measurement")
    parser.add_argument("--no-distributed", action="store_true", help="embedded mode only")
    args = parser.parse_args()
    configure_logging("WARNING")
    print(describe_machine())
    print(f"# {args.requests} sequential requests per row; p50/p99 in ms")
    print("| set-up | request | p50 | p99 |")
    print("| --- | --- | ---: | ---: |")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-gateway-") as tmp:
        setups = ["embedded"] if args.no_distributed else ["embedded", "distributed"]
        for name in setups:
            with _environment(name, Path(tmp, name)) as env:
                results |= _measure(name, env, args.requests)
    print()
    for name in ("embedded", "distributed"):
        if f"{name}:gateway" in results:
            overhead = results[f"{name}:gateway"] - results[f"{name}:baseline"]
            ratio = results[f"{name}:gateway"] / results[f"{name}:baseline"]
            print(
                f"{name}: gateway overhead p50 {overhead:.2f} ms over the bare HTTP stack "
                f"(ratio {ratio:.2f}x); in process, auth + limits p50 "
                f"{results[f'{name}:in-process']:.3f} ms"
            )


@contextmanager
def _environment(name: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """The settings of one set-up as environment variables, its stores made and removed."""
    env = {"SHOAL_DATA_DIR": str(data_dir), "SHOAL_LOG_LEVEL": "WARNING"}
    if name == "embedded":
        yield env
        return
    database = f"shoal_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"shoal-bench:{uuid.uuid4().hex[:8]}:"
    with psycopg.connect(POSTGRES + "postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        env |= {
            "SHOAL_DATABASE_URL": POSTGRES + database,
            "SHOAL_REDIS_URL": REDIS,
            "SHOAL_LIMITS__KEY_PREFIX": prefix,
            "SHOAL_CACHE__KEY_PREFIX": prefix + "cache:",
        }
        yield env
    finally:
        with psycopg.connect(POSTGRES + "postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS)
        if found := list(client.scan_iter(match=prefix + "*")):
            client.delete(*found)
        client.close()


def _measure(name: str, env: dict[str, str], requests: int) -> dict[str, float]:
    settings = Settings(
        data_dir=Path(env["SHOAL_DATA_DIR"]),
        database_url=env.get("SHOAL_DATABASE_URL"),
        redis_url=env.get("SHOAL_REDIS_URL"),
        limits={"key_prefix": env.get("SHOAL_LIMITS__KEY_PREFIX", "shoal:limit:")},
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    # Budgets far above what the run spends: every request is checked, none refused.
    quotas = {"requests_per_minute": 10**8, "tokens_per_minute": 10**9}
    with sessions() as session:
        tenant = tenants.create_tenant(session, name="bench", quotas=quotas)
        _, key = keys.create_key(
            session, tenant_id=tenant.id, name="bench", scopes=["admin"], quotas=quotas
        )
        session.commit()

    from app.platform import make_limits

    limits = make_limits(settings)

    def in_process() -> None:
        with sessions() as session:
            caller = keys.authenticate(session, key)
            session.commit()
        assert caller.tenant_id is not None  # noqa: S101
        limits.admit(
            Quotas(caller.tenant_id, caller.key_id, caller.tenant_quotas, caller.key_quotas)
        )

    samples = _timed(in_process, requests)
    results = {f"{name}:in-process": percentile(samples, 50)}
    print(
        f"| {name} | authenticate + admit, in process | {results[f'{name}:in-process']:.3f} "
        f"| {percentile(samples, 99):.3f} |"
    )
    limits.close()
    engine.dispose()

    port = free_port()
    log = settings.data_dir / "serve.log"
    server = start_shoal(["serve", "--port", str(port)], {**os.environ, **env}, log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_or_exit(base + "/readyz", server, log)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=30) as client:
            made = client.post("/v1/namespaces", json={"name": "bench"}, headers=headers)
            assert made.status_code == 201, made.text  # noqa: S101
            rows: tuple[tuple[str, str, Callable[[], httpx.Response]], ...] = (
                ("baseline", "GET /healthz (no key)", lambda: client.get("/healthz")),
                (
                    "gateway",
                    "GET /v1/namespaces/bench (key, 2 budgets, 1 namespace read)",
                    lambda: client.get("/v1/namespaces/bench", headers=headers),
                ),
            )
            for label, _, call in rows:  # warm both paths up
                for _ in range(50):
                    assert call().status_code == 200, label  # noqa: S101
            # Interleaved rounds, so that a slow moment of the machine hits both alike.
            runs: dict[str, list[float]] = {label: [] for label, _, _ in rows}
            for _ in range(10):
                for label, _, call in rows:
                    runs[label] += _timed(call, requests // 10)
            for label, title, _ in rows:
                p50, p99 = percentile(runs[label], 50), percentile(runs[label], 99)
                results[f"{name}:{label}"] = p50
                print(f"| {name} | {title} | {p50:.2f} | {p99:.2f} |")
    finally:
        stop(server)
    return results


def _timed(call: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


if __name__ == "__main__":
    main()
