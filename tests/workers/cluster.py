"""A broker queue, a Postgres database, and real `shoal worker` processes on demand.

No Qdrant server can run here, so each worker owns an on-disk Qdrant Edge store under the
cluster's data directory, and a test opens it only after every worker has stopped (in
production workers and API share a Qdrant server).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Document, DocumentState, Namespace
from app.services import documents, tenants
from app.services.scheduling import enqueue_fairly
from app.services.uploads import UploadItem
from harness import servers
from ingestion.config import EmbeddingConfig
from tests.conftest import free_port
from tests.services import PrivateRabbitMQ, PrivateRedis
from workers.celery_app import CeleryQueue
from workers.queue import TaskQueue

VISIBILITY_TIMEOUT_S = 8
REAPER_OFF = {"SHOAL_WORKERS__REAPER_INTERVAL_S": "3600"}  # no round within any test


@dataclass
class Broker:
    """A private broker server: RabbitMQ or Redis."""

    kind: str
    server: PrivateRabbitMQ | PrivateRedis

    @property
    def url(self) -> str:
        return self.server.url

    def unacknowledged(self, queue: str) -> list[str] | int:
        """What the broker holds as delivered and not acknowledged on ``queue``: the document
        ids of those messages on Redis (it keeps them whole), their number on RabbitMQ."""
        if isinstance(self.server, PrivateRabbitMQ):
            return self.server.queue_counts(queue)[1]
        client = redis.Redis.from_url(self.url)
        try:
            held = client.hvals("unacked")  # Kombu's Redis transport: tag -> [message, ex, key]
        finally:
            client.close()
        ids = []
        for raw in held:
            message, _exchange, routing_key = json.loads(raw)
            if routing_key == queue:
                ids.append(_document_id(message))
        return ids

    def holds_a_message_for_each(self, queue: str, document_ids: set[str]) -> bool:
        """Whether the broker holds a message, waiting or unacknowledged, for each of
        ``document_ids``: by id on Redis, by count on RabbitMQ."""
        if isinstance(self.server, PrivateRabbitMQ):
            return sum(self.server.queue_counts(queue)) >= len(document_ids)
        client = redis.Redis.from_url(self.url)
        try:
            # One list per priority: the queue's name, then name:1 ... name:9.
            waiting = [
                raw for key in client.scan_iter(f"{queue}*") for raw in client.lrange(key, 0, -1)
            ]
        finally:
            client.close()
        unacknowledged = self.unacknowledged(queue)
        assert isinstance(unacknowledged, list)
        held = {_document_id(json.loads(raw)) for raw in waiting} | set(unacknowledged)
        return document_ids <= held

    def describe(self, queue: str) -> str:
        """The broker's view of ``queue``, for a failure message."""
        if isinstance(self.server, PrivateRabbitMQ):
            ready, unacked = self.server.queue_counts(queue)
            return f"RabbitMQ {queue}: {ready} ready, {unacked} unacknowledged"
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            lists = {k: client.llen(k) for k in client.scan_iter(f"{queue}*")}
            held = client.zrange("unacked_index", 0, -1, withscores=True)
            mutex_ttl = client.ttl("unacked_mutex")
        finally:
            client.close()
        return (
            f"Redis lists {lists}; unacknowledged (tag, delivered at) {held} at {time.time():.0f}; "
            f"restore mutex ttl {mutex_ttl}"
        )


def _document_id(message: dict[str, Any]) -> str:
    """The document id a task message of Kombu's Redis transport carries."""
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return str(args[0])


@dataclass
class Worker:
    """One `shoal worker` process and the port of its Prometheus metrics."""

    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def documents_total(self, outcome: str) -> float:
        """This process's ``shoal_documents_total{outcome=...}``: the indexings it completed
        (``indexed``), or the documents it failed (``failed``)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "shoal_documents_total"
                    and sample.labels.get("outcome") == outcome
                ):
                    return sample.value
        return 0.0

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Cluster:
    """A queue on ``broker``, a database, and the workers started on them."""

    broker: Broker
    queue: str
    database_url: str
    data_dir: Path
    sessions: sessionmaker[Session]
    celery: Celery
    producer: CeleryQueue
    workers: list[Worker] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            **os.environ,
            "SHOAL_BROKER_URL": self.broker.url,
            "SHOAL_DATABASE_URL": self.database_url,
            "SHOAL_DATA_DIR": str(self.data_dir),
            "SHOAL_WORKERS__QUEUE": self.queue,
            "SHOAL_WORKERS__CONCURRENCY": "2",
            "SHOAL_WORKERS__VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "SHOAL_WORKERS__REAPER_INTERVAL_S": "1",
            # The model id the namespaces here record (the tests' own embedder's), and no
            # ONNX export in each new data directory.
            "SHOAL_EMBEDDING__BACKEND": "torch",
            "HF_HUB_OFFLINE": "1",
            **overrides,
        }

    def start_worker(self, **overrides: str) -> Worker:
        """``shoal worker`` with this cluster's settings, ``overrides`` on top; returns once it
        serves its metrics (the model is loaded by then)."""
        port = free_port()
        log = self.data_dir / f"worker-{len(self.workers)}.log"
        env = self.env(SHOAL_WORKERS__METRICS_PORT=str(port), **overrides)
        process = servers.start_shoal(["worker"], env, log)
        worker = Worker(process, port, log)
        self.workers.append(worker)
        try:
            servers.wait_until_ready(f"http://127.0.0.1:{port}/metrics", process, log)
        except servers.NotReadyError as exc:
            pytest.fail(f"the worker did not start: {exc}\n{self.tails()}")
        return worker

    def make_namespace(self, tenant_name: str) -> Namespace:
        with self.sessions() as session:
            tenant = tenants.create_tenant(
                session, name=f"{tenant_name}-{uuid.uuid4().hex[:6]}", quotas={}
            )
            namespace = Namespace(
                tenant_id=tenant.id,
                name="docs",
                embedding_model=EmbeddingConfig().model,  # the torch backend's model id
                embedding_dimension=384,
            )
            session.add(namespace)
            session.commit()
            return namespace

    def upload(
        self,
        namespace: Namespace,
        items: Sequence[UploadItem | str],
        batch: int = 100,
        queue: TaskQueue | None = None,
    ) -> list[str]:
        """Upload as the API does (commit, then enqueue on ``queue``, by default the cluster's);
        returns the new documents' ids. A string is a text file's content."""
        producer = queue or self.producer
        files = [
            item if isinstance(item, UploadItem) else UploadItem(item.encode(), f"doc-{i}.txt")
            for i, item in enumerate(items)
        ]
        ids: list[str] = []
        for start in range(0, len(files), batch):
            with self.sessions() as session:
                result = documents.upload(
                    session,
                    namespace=namespace,
                    items=files[start : start + batch],
                    enqueue=lambda tenant_id, new: enqueue_fairly(
                        self.sessions, producer, tenant_id, new
                    ),
                )
                ids += [uploaded.document.id for uploaded in result.documents]
        return ids

    def purge(self, queue: str | None = None) -> int:
        """Drop every message waiting in ``queue`` (by default the cluster's), as a broker that
        lost them; returns how many."""
        with self.celery.connection_for_write() as connection:
            channel: Any = connection.default_channel  # the transport's own channel
            return int(channel.queue_purge(queue or self.queue))

    def states(self, namespace: Namespace) -> dict[DocumentState, int]:
        with self.sessions() as session:
            rows = session.execute(
                select(Document.state, func.count())
                .where(Document.namespace_id == namespace.id)
                .group_by(Document.state)
            ).all()
        return {state: int(n) for state, n in rows}

    def documents(self, namespace: Namespace) -> dict[str, Document]:
        with self.sessions() as session:
            rows = session.scalars(select(Document).where(Document.namespace_id == namespace.id))
            return {document.id: document for document in rows}

    def wait_until(
        self,
        condition: Callable[[], bool],
        timeout_s: float,
        what: str,
        state: Callable[[], object] | None = None,
    ) -> None:
        """Poll ``condition``; on timeout fail with ``state()`` (what the test watches) and the
        workers' logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        seen = "" if state is None else f"\n{state()}"
        pytest.fail(f"timed out waiting for {what}{seen}\nworker logs:\n{self.tails()}")

    def tails(self) -> str:
        return "\n".join(
            f"--- {w.log.name}\n" + w.log.read_text(errors="replace")[-3000:] for w in self.workers
        )

    def close(self) -> None:
        for worker in self.workers:  # what a test left running; nothing in it is kept
            worker.stop(signal.SIGKILL)


def corpus(n: int, topic: str) -> list[str]:
    return [
        f"Report {i} on {topic}: sample {uuid.uuid4().hex} was measured at {i % 97} units."
        for i in range(n)
    ]
