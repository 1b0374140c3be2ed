"""The README's path, as a user runs it: `shoal serve`, admin CLI, `shoal ingest`, `shoal query`,
then a restart that keeps tenants, keys, documents and answers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.servers import free_port, wait_until_ready

SHOAL = [sys.executable, "-m", "app.cli"]
DOCS = {
    "otters.txt": "Sea otters hold hands while they sleep so that they do not drift apart.",
    "etna.md": "# Mount Etna\n\nMount Etna, on Sicily, is the most active volcano in Europe.",
}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


class Server:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [*SHOAL, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    def wait_ready(self, timeout_s: float = 300) -> None:  # ready includes the model warm-up
        wait_until_ready(f"{self.url}/readyz", timeout_s=timeout_s)
        assert self.proc.poll() is None, "shoal serve exited"

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        return out


@pytest.mark.slow
def test_serve_bootstraps_a_key_and_a_restart_keeps_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SHOAL_DATA_DIR": str(tmp_path / "data"),
        "SHOAL_API__PORT": str(port),
        "SHOAL_URL": f"http://127.0.0.1:{port}",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("SHOAL_DATABASE_URL", None)
    server = Server(env, port)
    server.wait_ready()

    tenant = json.loads(run(env, "admin", "create-tenant", "acme", "--json").stdout)
    made = run(
        env,
        "admin",
        "create-key",
        "--tenant",
        tenant["id"],
        "--scopes",
        "admin,write,query",
        "--json",
    )
    key = json.loads(made.stdout)["key"]
    env["SHOAL_API_KEY"] = key
    listed = json.loads(run(env, "admin", "list-tenants", "--json").stdout)
    assert [t["name"] for t in listed] == ["acme"]

    auth = {"Authorization": f"Bearer {key}"}
    assert (
        httpx.post(f"{server.url}/v1/namespaces", json={"name": "docs"}, headers=auth).status_code
        == 201
    )
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    ingested = run(env, "ingest", "--namespace", "docs", str(folder))
    assert ingested.returncode == 0, ingested.stderr
    asked = run(env, "query", "--namespace", "docs", "Why do otters hold hands?", "--json")
    assert asked.returncode == 0, asked.stderr
    before = json.loads(asked.stdout)
    assert before["answerable"] is True
    assert "hold hands" in before["citations"][0]["text"]

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    records = [
        {"_id": f"r{i}", "text": f"Record {i} is about lighthouse keeper {i}."} for i in range(3)
    ]
    (mixed / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (mixed / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> trailer garbage")
    created = httpx.post(f"{server.url}/v1/namespaces", json={"name": "more"}, headers=auth)
    assert created.status_code == 201
    partial = run(env, "ingest", "--namespace", "more", str(mixed))
    assert partial.returncode == 1, partial.stderr
    assert "broken.pdf" in partial.stderr
    assert "3 indexed, 1 failed" in partial.stderr

    output = server.stop()
    platform_key = re.search(r"(shoal_[0-9a-f]+_\S+)", output)
    assert platform_key, output

    again = Server(env, port)
    again.wait_ready()
    try:
        after = httpx.post(
            f"{again.url}/v1/namespaces/docs/query",
            json={"question": "Why do otters hold hands?"},
            headers=auth,
            timeout=60,
        ).json()
        assert [c["chunk_id"] for c in after["citations"]] == [
            c["chunk_id"] for c in before["citations"]
        ]
        docs = httpx.get(f"{again.url}/v1/namespaces/docs/documents", headers=auth).json()
        assert sorted(d["filename"] for d in docs["items"]) == sorted(DOCS)
        tenants = httpx.get(
            f"{again.url}/v1/admin/tenants",
            headers={"Authorization": f"Bearer {platform_key.group(1)}"},
        )
        assert tenants.status_code == 200
        revoked = run(env, "admin", "revoke-key", key.split("_")[1], "--json")
        assert revoked.returncode == 0
        assert httpx.get(f"{again.url}/v1/namespaces", headers=auth).status_code == 401
    finally:
        second_output = again.stop()
    assert "platform key" not in second_output  # printed once, on the empty database only
