"""The OpenAI door's overhead: the same question through ``/v1/openai/chat/completions`` and
through ``/v1/namespaces/{ns}/query``, on the same server, in the same run.

    python -m bench.openai_door [--requests 300]

``shoal serve`` runs in its own process, as users run it (embedded: SQLite, Qdrant Edge, the
in-process limiter), with a tenant key whose tenant and key both have quotas (so every request
authenticates and draws from its budgets) and a namespace of a few short documents. Each row
asks one question again and again (after a warm-up, the embedding cache answers it, so what is
left is HTTP, the gateway, search, the evidence gate, the extractive answer and the response):

- ``/query`` and the door, plain JSON, one ``httpx`` client: the door's p50 minus ``/query``'s is
  its overhead (parsing the model name and messages, the OpenAI shapes);
- both streamed (the whole stream read);
- the door through the official ``openai`` client (its own parsing on top).

One client, one keep-alive connection, requests one after another, rows interleaved in rounds
so that a slow moment of the machine hits every row alike: latency, not throughput.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from app.db.migrate import upgrade
from app.db.session import make_engine, make_session_factory
from app.logging import configure_logging
from app.services import keys, tenants
from bench.gateway import _timed
from bench.ingest import describe_machine
from bench.query import percentile
from harness.servers import free_port, start_shoal, stop, wait_or_exit

QUESTION = "What is a group of resting sea otters called?"
DOCUMENTS = [
    "Sea otters hold hands while they sleep so that they do not drift apart on the water. "
    "A group of resting otters is called a raft.",
    "Mount Etna is the most active volcano in Europe; it has erupted many times since 2000.",
    "Harbour seals rest on sandbanks at low tide and dive for herring in the spring.",
    "River otters dig dens in the banks of lakes and rivers and hunt mostly at night.",
]
ROUNDS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per row")
    args = parser.parse_args()
    configure_logging("WARNING")
    print(describe_machine())
    with tempfile.TemporaryDirectory(prefix="shoal-bench-openai-") as tmp:
        results = _measure(Path(tmp), args.requests)
    plain = results["door"] - results["query"]
    streamed = results["door stream"] - results["query stream"]
    print()
    print(
        f"OpenAI door overhead, p50: {plain:+.2f} ms plain ({results['door']:.2f} against "
        f"/query {results['query']:.2f}, ratio {results['door'] / results['query']:.3f}), "
        f"{streamed:+.2f} ms streamed; through the openai client "
        f"{results['door via openai SDK'] - results['query']:+.2f} ms"
    )


def _measure(data_dir: Path, requests: int) -> dict[str, float]:
    url = f"sqlite:///{data_dir / 'shoal.db'}"
    upgrade(url)
    engine = make_engine(url)
    # Budgets far above what the run spends: every request is checked, none refused.
    quotas = {"requests_per_minute": 10**8, "tokens_per_minute": 10**9}
    with make_session_factory(engine)() as session:
        tenant = tenants.create_tenant(session, name="bench", quotas=quotas)
        _, key = keys.create_key(
            session, tenant_id=tenant.id, name="bench", scopes=["admin"], quotas=quotas
        )
        session.commit()
    engine.dispose()

    port = free_port()
    env = {"SHOAL_DATA_DIR": str(data_dir), "SHOAL_DATABASE_URL": url, "SHOAL_LOG_LEVEL": "WARNING"}
    log = data_dir / "serve.log"
    server = start_shoal(["serve", "--port", str(port)], {**os.environ, **env}, log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_or_exit(base + "/readyz", server, log)
        with (
            httpx.Client(base_url=base, timeout=60) as client,
            openai.OpenAI(base_url=f"{base}/v1/openai", api_key=key, max_retries=0) as sdk,
        ):
            headers = {"Authorization": f"Bearer {key}"}
            _index(client, headers)
            query = {"question": QUESTION}
            chat = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}]}
            rows: dict[str, Callable[[], object]] = {
                "query": lambda: _ok(
                    client.post("/v1/namespaces/docs/query", json=query, headers=headers)
                ),
                "door": lambda: _ok(
                    client.post("/v1/openai/chat/completions", json=chat, headers=headers)
                ),
                "query stream": lambda: _read_stream(
                    client, "/v1/namespaces/docs/query", {**query, "stream": True}, headers
                ),
                "door stream": lambda: _read_stream(
                    client, "/v1/openai/chat/completions", {**chat, "stream": True}, headers
                ),
                "door via openai SDK": lambda: sdk.chat.completions.create(
                    model="docs", messages=[{"role": "user", "content": QUESTION}]
                ),
            }
            for call in rows.values():  # warm every path up (and the caches)
                for _ in range(20):
                    call()
            runs: dict[str, list[float]] = {label: [] for label in rows}
            for _ in range(ROUNDS):
                for label, call in rows.items():
                    runs[label] += _timed(call, max(1, requests // ROUNDS))
    finally:
        stop(server)
    print(f"# {requests} sequential requests per row, the same question; p50/p99 in ms")
    print("| request | p50 | p99 |")
    print("| --- | ---: | ---: |")
    results = {}
    for label, samples in runs.items():
        results[label] = percentile(samples, 50)
        print(f"| {label} | {results[label]:.2f} | {percentile(samples, 99):.2f} |")
    return results


def _index(client: httpx.Client, headers: dict[str, str]) -> None:
    made = client.post("/v1/namespaces", json={"name": "docs"}, headers=headers)
    assert made.status_code == 201, made.text  # noqa: S101
    documents = [{"text": text, "filename": f"{i}.txt"} for i, text in enumerate(DOCUMENTS)]
    accepted = client.post(
        "/v1/namespaces/docs/documents", json={"documents": documents}, headers=headers
    )
    assert accepted.status_code == 202, accepted.text  # noqa: S101
    job = f"/v1/jobs/{accepted.json()['job_id']}"
    while (state := client.get(job, headers=headers).json()["state"]) in ("queued", "running"):
        time.sleep(0.2)
    assert state == "succeeded", state  # noqa: S101


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text  # noqa: S101
    return response


def _read_stream(
    client: httpx.Client, path: str, body: dict[str, object], headers: dict[str, str]
) -> None:
    with client.stream("POST", path, json=body, headers=headers) as response:
        assert response.status_code == 200  # noqa: S101
        for _ in response.iter_bytes():
            pass


if __name__ == "__main__":
    main()
