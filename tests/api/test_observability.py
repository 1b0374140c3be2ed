"""What operators watch: the access log, readiness with the cache, and the metrics that
autoscalers read (queue depth per queue, GPUs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from app.settings import Settings
from tests.api.conftest import make_tenant
from tests.conftest import Api, free_port, start_api


def test_every_request_is_logged_with_its_ids_route_status_and_time_never_the_key(
    api: Api,
) -> None:
    tenant = make_tenant(api, "acme")
    with capture_logs() as logs:
        response = api.client.get(
            "/v1/namespaces/missing",
            headers={**api.headers(tenant.query_key), "X-Request-ID": "trace-42"},
        )
    assert response.status_code == 404
    [line] = [entry for entry in logs if entry["event"] == "http_request"]
    assert line["route"] == "/v1/namespaces/{ns}"  # the template: tenants' names stay out
    assert line["status"] == 404
    assert line["method"] == "GET"
    assert line["duration_ms"] > 0
    assert line["tenant_id"] == tenant.id
    assert line["key_id"] == tenant.query_key.split("_")[1]
    secret = tenant.query_key.split("_", 2)[2]
    assert all(secret not in repr(entry) for entry in logs)


def test_readiness_reports_the_cache_without_depending_on_it(
    tmp_path: Path, sqlite_url: str, embedder: Any
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        cache={"redis_timeout_s": 0.1, "redis_connect_timeout_s": 0.1},
        limits={"redis_timeout_s": 0.1},
    )
    for api in start_api(settings, embedder):
        ready = api.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert checks["cache"].startswith("degraded: ")
        assert checks["database"] == checks["vector_store"] == "ok"


def test_readiness_in_embedded_mode(api: Api) -> None:
    checks = api.client.get("/readyz").json()["checks"]
    assert checks["cache"] == "ok (in-process)"


def test_queue_depth_and_gpu_gauges_are_exported(api: Api) -> None:
    metrics = api.client.get("/metrics").text
    assert re.search(r'^shoal_queue_depth\{queue="shoal\.index"\} \d', metrics, re.MULTILINE)
    [count] = re.findall(r"^shoal_gpu_count (\S+)$", metrics, re.MULTILINE)
    per_gpu = re.findall(r'^shoal_gpu_utilization_ratio\{gpu="\d+"\}', metrics, re.MULTILINE)
    # As many utilisation series as GPUs NVML sees: none on a machine without a driver.
    assert len(per_gpu) == int(float(count))
