"""OpenTelemetry: with an OTLP endpoint configured, `shoal serve` exports a span per request
over OTLP/HTTP (to a real HTTP listener here, as a collector would receive them); never a key.
Its own process: the tracer provider is global to a process once configured."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_shoal, stop, wait_until_serving

pytestmark = pytest.mark.slow


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.received: list[tuple[str, bytes]] = []


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_requests_are_traced_to_the_configured_otlp_endpoint(
    tmp_path: Path, collector: Collector
) -> None:
    key = f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SHOAL_DATA_DIR": str(tmp_path),
        "SHOAL_BOOTSTRAP_KEY": key,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": (
            f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
        ),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "shoal-api",
    }
    log = tmp_path / "serve.log"
    server = start_shoal(["serve", "--port", str(port)], env, log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server, log)
        listed = httpx.get(
            base + "/v1/admin/tenants", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert listed.status_code == 200

        deadline = time.monotonic() + 30
        while not any(b"/v1/admin/tenants" in body for _, body in collector.received):
            assert time.monotonic() < deadline, (collector.received, log.read_text()[-3000:])
            time.sleep(0.2)
    finally:
        stop(server)

    assert {path for path, _ in collector.received} == {"/v1/traces"}
    exported = b"".join(body for _, body in collector.received)
    assert b"shoal-api" in exported  # the service name
    assert b"/readyz" not in exported  # probes are not traced
    assert key.split("_", 2)[2].encode() not in exported
