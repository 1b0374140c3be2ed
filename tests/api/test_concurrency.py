"""More requests in flight than the server has worker threads, on SQLite, where every
transaction holds the write lock: none may wait for a lock whose holder waits for a thread.

`shoal serve` in its own process, as users run it (AnyIO's pool: 40 threads)."""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_shoal, stop, wait_until_serving

pytestmark = pytest.mark.slow

IN_FLIGHT = 120


def test_more_requests_than_threads_all_succeed_on_sqlite(tmp_path: Path) -> None:
    key = f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SHOAL_DATA_DIR": str(tmp_path),
        "SHOAL_BOOTSTRAP_KEY": key,
        "SHOAL_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "serve.log"
    server = start_shoal(["serve", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, server, log)
        platform = {"Authorization": f"Bearer {key}"}
        tenant = httpx.post(
            base + "/v1/admin/tenants", json={"name": "acme"}, headers=platform
        ).json()
        made = httpx.post(
            f"{base}/v1/admin/tenants/{tenant['id']}/keys",
            json={"name": "k", "scopes": ["admin"]},
            headers=platform,
        ).json()
        headers = {"Authorization": f"Bearer {made['key']}"}
        assert httpx.post(base + "/v1/namespaces", json={"name": "docs"}, headers=headers)

        def read(n: int) -> int:
            path = "/v1/namespaces/docs" if n % 2 else "/v1/namespaces/docs/documents"
            return httpx.get(base + path, headers=headers, timeout=120).status_code

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            statuses = list(pool.map(read, range(IN_FLIGHT * 3)))
    finally:
        stop(server)

    assert statuses == [200] * len(statuses), sorted(set(statuses))
