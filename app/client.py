"""The HTTP client behind ``shoal ingest`` and ``shoal query``."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

TERMINAL_JOB_STATES = frozenset({"succeeded", "partial", "failed"})
TIMEOUT = httpx.Timeout(30.0, read=300.0)


class ClientError(Exception):
    """The server refused a request; the message is its problem detail."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def _passing(exc: BaseException) -> bool:
    """A failure worth asking again about: the network, or the server's own 5xx."""
    return isinstance(exc, httpx.TransportError) or (
        isinstance(exc, ClientError) and exc.status >= 500
    )


# Following a job only reads: a server restart or a dropped connection mid-batch is waited out
# (about a minute in all) rather than reported as a failed ingest.
_patiently = Retrying(
    retry=retry_if_exception(_passing),
    wait=wait_random_exponential(multiplier=0.5, max=15),
    stop=stop_after_attempt(8),
    reraise=True,
)


def _client(url: str, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=TIMEOUT
    )


def _check(response: httpx.Response) -> Any:  # Any: the server's JSON
    if response.is_error:
        try:
            problem = response.json()
            detail = f"{problem.get('title')}: {problem.get('detail')}"
        except json.JSONDecodeError:
            detail = response.text
        raise ClientError(f"HTTP {response.status_code} {detail}", status=response.status_code)
    return response.json()


def walk(paths: Sequence[Path]) -> Iterator[Path]:
    """Files under ``paths`` in a stable order, skipping hidden files and folders."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(p.startswith(".") for p in child.relative_to(path).parts)
                if child.is_file() and not hidden:
                    yield child
        elif path.is_file():
            yield path


def ask(question: str, *, namespace: str, url: str, api_key: str, top_k: int | None) -> Any:
    body: dict[str, Any] = {"question": question}
    if top_k is not None:
        body["top_k"] = top_k
    with _client(url, api_key) as client:
        return _check(client.post(f"/v1/namespaces/{namespace}/query", json=body))


def ingest_paths(
    paths: Sequence[Path],
    *,
    namespace: str,
    url: str,
    api_key: str,
    batch_size: int,
    wait: bool,
    console: Console,
) -> int:
    """Upload in batches, then follow the jobs; 0 if every document indexed, else 1."""
    files = list(walk(paths))
    if not files:
        console.print("no files found")
        return 1
    jobs: list[str] = []
    documents = 0  # a JSON or JSONL file is one document per record
    try:
        with _client(url, api_key) as client, _progress(console) as progress:
            task = progress.add_task("uploading", total=len(files))
            for start in range(0, len(files), batch_size):
                batch = files[start : start + batch_size]
                parts = [
                    (
                        "files",
                        (
                            f.name,
                            f.read_bytes(),
                            mimetypes.guess_type(f.name)[0] or "application/octet-stream",
                        ),
                    )
                    for f in batch
                ]
                accepted = _check(client.post(f"/v1/namespaces/{namespace}/documents", files=parts))
                jobs.append(accepted["job_id"])
                documents += len({d["id"] for d in accepted["documents"]})
                progress.advance(task, len(batch))
            if not wait:
                console.print(f"jobs: {', '.join(jobs)}")
                return 0
            return _follow(client, jobs, documents, progress, console)
    except (ClientError, httpx.HTTPError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


def _follow(
    client: httpx.Client, jobs: list[str], total: int, progress: Progress, console: Console
) -> int:
    """Poll the jobs until each is finished; print the failed documents; 1 if any failed."""
    task = progress.add_task("indexing", total=total)
    latest: dict[str, Any] = {}
    while True:
        for job_id in jobs:
            if latest.get(job_id, {}).get("state") not in TERMINAL_JOB_STATES:
                # Only the failed documents are listed: the counts tell the rest.
                latest[job_id] = _patiently(
                    lambda job_id=job_id: _check(
                        client.get(f"/v1/jobs/{job_id}", params={"state": "failed"})
                    )
                )
        counts = [job["counts"] for job in latest.values()]
        progress.update(task, completed=sum(c["indexed"] + c["failed"] for c in counts))
        if all(job["state"] in TERMINAL_JOB_STATES for job in latest.values()):
            break
        time.sleep(0.5)
    failed = [doc for job in latest.values() for doc in job["documents"]]
    for doc in failed:
        console.print(f"[red]failed[/red] {doc.get('filename') or doc['id']}: {doc.get('reason')}")
    console.print(f"{sum(c['indexed'] for c in counts)} indexed, {len(failed)} failed")
    return 1 if failed else 0


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
