"""The vector store's breaker fed by real faults, not drills: a Qdrant URL that refuses
connections, one that accepts and never answers, one that answers 4xx, a collection of the
wrong dimension, and (slow) a shard directory taken away under a running ``shoal serve``.

No Qdrant server runs here, so the server adapter cannot be shown answering again: its tests
show the breaker opening, half-opening, probing and staying open while the fault lasts, and
closing once the URL answers at all (a refusal is an answer). Recovery to full answers is shown
on the embedded store, whose directory comes back.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient

from app.services import namespaces
from app.settings import Settings
from ingestion.embedder import ModelEmbedder
from retrieval.stores import ServerStore
from tests.api.conftest import Tenant, assert_problem, make_namespace, make_tenant, upload
from tests.api.conftest import wait_for_job as wait_for_job_in_process
from tests.api.test_resilience import ask, metric, transitions
from tests.conftest import Api, free_port, start_api, start_shoal, stop, wait_until_serving

OTTERS = {
    "filename": "otters.txt",
    "text": "Sea otters hold hands while they sleep so that they do not drift apart on the water. "
    "A group of resting otters is called a raft.",
}
CACHED = "What is a group of resting sea otters called?"
NEVER_ASKED = "Why do sea otters hold hands while they sleep?"
STORE_TIMEOUT_S = 0.3
RESET_S = 2.0
THRESHOLD = 3
# What a client waits at most. Far above the 0.3 s store timeout on a loaded machine, far below
# what a query would take without it (qdrant-client's own timeout: 30 s here).
CLIENT_TIMEOUT_S = 10.0


def settings_for(tmp_path: Path, sqlite_url: str, qdrant_url: str | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        qdrant_url=qdrant_url,
        store_timeout_s=STORE_TIMEOUT_S,
        breaker_reset_s=RESET_S,
        breaker_failure_threshold=THRESHOLD,
    )


def breaker_state(api: Api) -> float:
    """0 closed, 1 half-open, 2 open."""
    return metric(api, "shoal_breaker_state", breaker="vector_store")


def timed(api: Api, tenant: Tenant, question: str) -> tuple[Any, float]:
    started = time.perf_counter()
    response = ask(api, tenant, question)
    return response, time.perf_counter() - started


def namespace_made_while_the_store_was_up(api: Api, tenant: Tenant, name: str = "docs") -> None:
    """The namespace row, its collection made in a store that worked (qdrant-client's local
    mode): the Qdrant behind the URL has since gone."""
    up = ServerStore(QdrantClient(location=":memory:"))
    embedder = api.platform.embedder
    with api.platform.sessions() as session:
        namespaces.create_namespace(
            session,
            tenant_id=tenant.id,
            name=name,
            embedding_model=embedder.model_id,
            embedding_dimension=embedder.dimension,
            indexed_fields={},
            routes={},
            store=up,
        )
    up.close()


# A store call that outlives the store timeout on a loaded machine says so instead of naming
# the fault: both are the store failing, and every test also needs one answer naming the fault.
TIMED_OUT = f"did not answer a search within {STORE_TIMEOUT_S:g} s"


def assert_degraded(response: Any, *reasons: str) -> str:
    """Check a degraded answer with nothing cached, whose reason holds one of ``reasons``;
    return the reason."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["degraded"] is True
    assert body["answerable"] is False
    assert body["route"]["name"] == "none"
    reason: str = body["degraded_reason"]
    assert any(r in reason for r in reasons), reason
    assert int(response.headers["Retry-After"]) >= 1
    return reason


def probe_until_closed(ask_once: Callable[[], Any], state: Callable[[], float]) -> Any:
    """Ask once per reset period until the breaker reads closed; the answer that closed it.

    One probe is enough on a quiet machine; on a loaded one a probe may outlive the store
    timeout, fail, and leave the breaker open for another period.
    """
    deadline = time.monotonic() + 30
    while True:
        response = ask_once()
        if state() == 0:
            return response
        assert time.monotonic() < deadline, "the breaker never closed"
        time.sleep(RESET_S)


# --- the server adapter: refused, stalled, answering 4xx ----------------------------------------


@pytest.fixture
def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def refusing_api(
    tmp_path: Path, sqlite_url: str, embedder: ModelEmbedder, refused_url: str
) -> Iterator[Api]:
    yield from start_api(settings_for(tmp_path, sqlite_url, refused_url), embedder)


def test_a_qdrant_that_refuses_connections_opens_the_breaker_until_it_answers(
    refusing_api: Api,
) -> None:
    api = refusing_api
    tenant = make_tenant(api, "acme")
    namespace_made_while_the_store_was_up(api, tenant)
    closed = transitions(api, "vector_store", "half_open", "closed")  # the registry is global

    slowest, reasons = 0.0, []
    for _ in range(THRESHOLD):  # each search is refused: a failure, and a degraded answer
        response, elapsed = timed(api, tenant, CACHED)
        reasons.append(assert_degraded(response, "Connection refused", TIMED_OUT))
        slowest = max(slowest, elapsed)
    assert any("Connection refused" in r for r in reasons), reasons
    assert breaker_state(api) == 2  # open
    response, open_elapsed = timed(api, tenant, NEVER_ASKED)
    assert_degraded(response, "circuit breaker is open")
    search = api.client.post(
        "/v1/namespaces/docs/search",
        json={"question": CACHED},
        headers=api.headers(tenant.query_key),
    )
    assert_problem(search, 503, "store-unavailable")
    assert 1 <= int(search.headers["Retry-After"]) <= RESET_S
    checks = api.client.get("/readyz").json()["checks"]
    assert checks["vector_store"].startswith("degraded: ")
    print(  # noqa: T201 (the figures)
        f"\nrefused: slowest degraded answer {slowest * 1000:.0f} ms, "
        f"open breaker {open_elapsed * 1000:.0f} ms"
    )

    # While the fault lasts each reset period ends in one probe, refused, and open again.
    for _ in range(2):
        reopened = transitions(api, "vector_store", "half_open", "open")
        time.sleep(RESET_S)
        assert breaker_state(api) == 1  # half-open
        response, _ = timed(api, tenant, CACHED)
        assert_degraded(response, "Connection refused", TIMED_OUT)  # the probe went through
        assert breaker_state(api) == 2
        assert transitions(api, "vector_store", "half_open", "open") == reopened + 1
    assert transitions(api, "vector_store", "half_open", "closed") == closed


class StalledQdrant:
    """A TCP port this test owns that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        # A close from another thread does not wake a blocked accept(): poll a flag instead.
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._accepted.append(connection)  # held open, never read, never answered
        self._listener.close()

    def close(self) -> None:
        """Close everything: stalled calls end with an error, new ones are refused."""
        self._closing.set()
        self._thread.join()
        for connection in self._accepted:
            connection.close()


@pytest.fixture
def stalled() -> Iterator[StalledQdrant]:
    server = StalledQdrant()
    yield server
    server.close()


@pytest.fixture
def stalled_api(
    tmp_path: Path,
    sqlite_url: str,
    embedder: ModelEmbedder,
    stalled: StalledQdrant,
) -> Iterator[Api]:
    url = f"http://127.0.0.1:{stalled.port}"
    yield from start_api(settings_for(tmp_path, sqlite_url, url), embedder)


def test_a_qdrant_that_never_answers_holds_no_query_past_the_store_timeout(
    stalled_api: Api, stalled: StalledQdrant
) -> None:
    api = stalled_api
    tenant = make_tenant(api, "acme")
    namespace_made_while_the_store_was_up(api, tenant)

    slowest = 0.0
    for _ in range(THRESHOLD):
        response, elapsed = timed(api, tenant, CACHED)
        assert_degraded(response, TIMED_OUT)
        slowest = max(slowest, elapsed)
    # Each answer waited the store timeout, never qdrant-client's own (30 s here).
    assert slowest < CLIENT_TIMEOUT_S, slowest
    assert breaker_state(api) == 2
    response, open_elapsed = timed(api, tenant, NEVER_ASKED)
    assert_degraded(response, "circuit breaker is open")
    assert open_elapsed < CLIENT_TIMEOUT_S
    print(  # noqa: T201 (the figures)
        f"\nstalled: slowest degraded answer {slowest * 1000:.0f} ms "
        f"(store timeout {STORE_TIMEOUT_S * 1000:.0f} ms), open breaker "
        f"{open_elapsed * 1000:.0f} ms"
    )

    stalled.close()  # the stall ends; the port now refuses: still a fault, the breaker holds
    time.sleep(RESET_S)
    response, _ = timed(api, tenant, CACHED)
    assert_degraded(response, "Connection refused", TIMED_OUT)
    assert breaker_state(api) == 2


@pytest.fixture
def not_qdrant(tmp_path: Path, refused_url: str) -> Iterator[Any]:
    """Starts, when called, a real web server that is no Qdrant (Python's, serving an empty
    directory) on the refused port: every path qdrant-client asks for is a 404."""
    (tmp_path / "www").mkdir()
    started: list[ThreadingHTTPServer] = []

    def start() -> None:
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
        port = int(refused_url.rsplit(":", 1)[1])
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_qdrant_url_that_answers_4xx_closes_the_breaker_and_never_opens_it(
    refusing_api: Api, not_qdrant: Any
) -> None:
    api = refusing_api
    tenant = make_tenant(api, "acme")
    namespace_made_while_the_store_was_up(api, tenant)
    for _ in range(THRESHOLD):
        assert_degraded(ask(api, tenant, CACHED), "Connection refused", TIMED_OUT)
    assert breaker_state(api) == 2

    not_qdrant()  # something answers there now, refusing every request (404)
    time.sleep(RESET_S)
    # The probe is answered, with a refusal: the store is reachable, the breaker closes. The
    # query does not fall back (no outage): the refusal is a bug to fix, a 500 that says so.
    response = probe_until_closed(lambda: ask(api, tenant, CACHED), lambda: breaker_state(api))
    problem = assert_problem(response, 500, "store-request-rejected")
    assert "Qdrant" not in problem["detail"]  # the store's message stays in the log
    opened = transitions(api, "vector_store", "closed", "open")
    for _ in range(2 * THRESHOLD):  # however many: a refusal is never a failure
        response = ask(api, tenant, NEVER_ASKED)
        assert_problem(response, 500, "store-request-rejected")
        assert "Retry-After" not in response.headers
    search = api.client.post(
        "/v1/namespaces/docs/search",
        json={"question": CACHED},
        headers=api.headers(tenant.query_key),
    )
    assert_problem(search, 500, "store-request-rejected")
    assert breaker_state(api) == 0
    assert transitions(api, "vector_store", "closed", "open") == opened


# --- the embedded store: a collection the store refuses ------------------------------------------


def test_a_collection_of_another_dimension_is_refused_without_opening_the_breaker(
    api: Api,
) -> None:
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")
    accepted = upload(api, tenant, "docs", [OTTERS])
    assert wait_for_job_in_process(api, tenant, accepted["job_id"])["state"] == "succeeded"
    # A namespace whose collection has another dimension than the model's vectors (a record
    # that claims this server's model, so the model check passes): every search in it is a
    # request Edge refuses ("Vector dimension error").
    with api.platform.sessions() as session:
        namespaces.create_namespace(
            session,
            tenant_id=tenant.id,
            name="old",
            embedding_model=api.platform.embedder.model_id,
            embedding_dimension=8,
            indexed_fields={},
            routes={},
            store=api.platform.store,
        )

    for _ in range(2 * THRESHOLD):
        refused = api.client.post(
            "/v1/namespaces/old/query",
            json={"question": CACHED},
            headers=api.headers(tenant.query_key),
        )
        assert_problem(refused, 500, "store-request-rejected")
        streamed = api.client.post(
            "/v1/namespaces/old/query",
            json={"question": CACHED, "stream": True},
            headers=api.headers(tenant.query_key),
        )
        assert_problem(streamed, 500, "store-request-rejected")
    assert breaker_state(api) == 0
    # Every other namespace is answered in full: no breaker opened on their behalf.
    response = ask(api, tenant, CACHED)
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is False
    assert body["answerable"] is True


# --- the embedded store under `shoal serve`: its shard directory taken away ---------------------


class Remote:
    """A running ``shoal serve`` over HTTP, as a user reaches it, with a client timeout."""

    def __init__(self, base: str, platform_key: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S)
        self.platform = {"Authorization": f"Bearer {platform_key}"}
        self.keys: dict[str, dict[str, str]] = {}

    def post(self, path: str, body: dict[str, Any], key: str = "platform") -> httpx.Response:
        headers = self.platform if key == "platform" else self.keys[key]
        return self.client.post(path, json=body, headers=headers)

    def setup(self) -> None:
        tenant = self.post("/v1/admin/tenants", {"name": "acme"}).json()
        for scope in ("admin", "write", "query"):
            made = self.post(
                f"/v1/admin/tenants/{tenant['id']}/keys", {"name": scope, "scopes": [scope]}
            )
            self.keys[scope] = {"Authorization": f"Bearer {made.json()['key']}"}
        assert self.post("/v1/namespaces", {"name": "docs"}, "admin").status_code == 201
        job = self.post("/v1/namespaces/docs/documents", {"documents": [OTTERS]}, "write").json()
        deadline = time.monotonic() + 120
        while True:
            state = self.client.get(f"/v1/jobs/{job['job_id']}", headers=self.keys["write"])
            if state.json()["state"] == "succeeded":
                return
            assert time.monotonic() < deadline, state.text
            time.sleep(0.2)

    def ask(self, question: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.post("/v1/namespaces/docs/query", {"question": question}, "query")
        return response, time.perf_counter() - started

    def breaker(self, before: str = "", after: str = "") -> float:
        """The store breaker's state, or its count of transitions ``before`` to ``after``."""
        text = self.client.get("/metrics").text
        if before:
            sample = (
                f'shoal_breaker_transitions_total{{breaker="vector_store",'
                f'from="{before}",to="{after}"}}'
            )
        else:
            sample = 'shoal_breaker_state{breaker="vector_store"}'
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0


def _removed(shard: Path) -> Callable[[], None]:
    backup = shard.with_name("backup")
    shutil.copytree(shard, backup)
    shutil.rmtree(shard)

    def restore() -> None:
        shutil.copytree(backup, shard)

    return restore


def _replaced_by_a_file(shard: Path) -> Callable[[], None]:
    away = shard.with_name("away")
    shard.rename(away)
    shard.write_text("a file where the shard's directory was")

    def restore() -> None:
        shard.unlink()
        away.rename(shard)

    return restore


@pytest.mark.slow
def test_a_shard_directory_taken_from_a_running_server_degrades_then_recovers(
    tmp_path: Path,
) -> None:
    # The server runs as root, like the tests, and root reads through chmod 000: the directory
    # is removed (then restored from a copy), and replaced by a file (then moved back).
    key = f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SHOAL_DATA_DIR": str(data),
        "SHOAL_BOOTSTRAP_KEY": key,
        "SHOAL_LOG_LEVEL": "WARNING",
        "SHOAL_STORE_TIMEOUT_S": str(STORE_TIMEOUT_S),
        "SHOAL_BREAKER_RESET_S": str(RESET_S),
        "SHOAL_BREAKER_FAILURE_THRESHOLD": str(THRESHOLD),
    }
    log = tmp_path / "serve.log"
    server = start_shoal(["serve", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    remote = Remote(base, key)
    try:
        wait_until_serving(base, server, log)
        remote.setup()
        first, _ = remote.ask(CACHED)
        assert first.status_code == 200
        assert first.json()["degraded"] is False
        [shard] = (data / "qdrant").iterdir()
        figures: list[float] = []

        for fault in (_removed, _replaced_by_a_file):
            restore = fault(shard)
            reasons = []
            for _ in range(THRESHOLD):  # the cached answer, with why and when to come back
                response, elapsed = remote.ask(CACHED)
                body = response.json()
                assert (body["degraded"], body["answer"]) == (True, first.json()["answer"])
                assert int(response.headers["Retry-After"]) >= 1
                reasons.append(body["degraded_reason"])
                figures.append(elapsed)
            assert any("is lost" in r for r in reasons), reasons
            assert all("is lost" in r or TIMED_OUT in r for r in reasons), reasons
            assert remote.breaker() == 2
            response, elapsed = remote.ask(NEVER_ASKED)
            assert response.json()["degraded"] is True
            assert "circuit breaker is open" in response.json()["degraded_reason"]
            figures.append(elapsed)
            search = remote.post("/v1/namespaces/docs/search", {"question": CACHED}, "query")
            assert_problem(search, 503, "store-unavailable")

            restore()
            closed = remote.breaker("half_open", "closed")
            time.sleep(RESET_S)
            # A probe finds the shard back: answered in full.
            response = probe_until_closed(lambda: remote.ask(NEVER_ASKED)[0], remote.breaker)
            assert response.status_code == 200
            assert response.json()["degraded"] is False
            assert response.json()["answerable"] is True
            assert remote.breaker("half_open", "closed") == closed + 1
        print(  # noqa: T201 (the figures)
            f"\nshard gone: degraded answers {min(figures) * 1000:.0f}-"
            f"{max(figures) * 1000:.0f} ms through shoal serve"
        )
    finally:
        remote.client.close()
        stop(server)
