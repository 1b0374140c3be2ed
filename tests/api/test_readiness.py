"""Readiness means the embedding model is warm: `/readyz` answers 503 with ``model: loading``
until the model has loaded and encoded a text, then 200 by itself, with no question asked;
`/healthz` (liveness) answers 200 throughout. A model that cannot load keeps the replica unready
and says why."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from ingestion.config import EmbeddingConfig
from ingestion.embedder import SentenceTransformerEmbedder, resolve_model_path
from tests.conftest import free_port, make_settings, start_api, start_shoal, stop

pytestmark = pytest.mark.slow


def test_serve_is_ready_only_once_the_embedding_model_has_encoded(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SHOAL_DATA_DIR": str(tmp_path),
        "SHOAL_BOOTSTRAP_KEY": f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}",
    }
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    server = start_shoal(["serve", "--port", str(port)], env, log)
    answers: list[tuple[int, dict[str, Any]]] = []
    alive: list[int] = []
    try:
        # Probe from the moment the port opens: importing and loading the model takes seconds,
        # binding the port milliseconds, so the first answers come while the model loads.
        deadline = time.monotonic() + 300  # a hang, not a speed: as wait_until_serving
        while not answers or answers[-1][0] != 200:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (answers[-3:], log.read_text()[-3000:])
            try:
                ready = httpx.get(base + "/readyz", timeout=10)
                if ready.status_code == 503:
                    alive.append(httpx.get(base + "/healthz", timeout=10).status_code)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            answers.append((ready.status_code, ready.json()))
            time.sleep(0.1)
    finally:
        stop(server)

    status, first = answers[0]
    assert (status, first["status"]) == (503, "unavailable"), answers[:3]
    for status, body in answers[:-1]:
        assert status == 503, body
        # The model is the only thing missing: everything else is up.
        assert body["checks"]["model"] == "loading", body
        assert body["checks"]["database"] == "ok", body
    assert alive  # asked while not ready
    assert set(alive) == {200}  # alive, just not ready
    status, last = answers[-1]
    assert last["status"] == "ready"
    assert last["checks"]["model"] == "ok"
    # The server warmed up by itself (nothing but probes was asked) and said so.
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warmed = [e for e in events if e.get("event") == "embedding_model_ready"]
    assert len(warmed) == 1
    assert warmed[0]["model"] == "all-MiniLM-L6-v2"
    assert warmed[0]["device"] == "cpu"


def broken_model(folder: Path) -> SentenceTransformerEmbedder:
    """The bundled MiniLM with its weights truncated: configuration and tokenizer still read,
    so the server starts, but the model cannot load."""
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    return SentenceTransformerEmbedder(EmbeddingConfig(model=str(folder)))


def test_a_model_that_cannot_load_keeps_the_replica_unready_and_says_why(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings: Settings = make_settings(tmp_path, sqlite_url)
    model = broken_model(tmp_path / "broken-model")
    for api in start_api(settings, model):
        deadline = time.monotonic() + 300  # a hang, not a speed
        while api.platform.model_state() == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ready = api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["model"].startswith("error: ")
        assert ready.json()["checks"]["database"] == "ok"
        assert api.client.get("/healthz").status_code == 200
        assert not model.warm
