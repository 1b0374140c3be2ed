"""Distributed indexing against real brokers and a real `shoal worker` process.

Each test runs on Redis and on RabbitMQ, with Postgres as the shared database. No Qdrant server
can run here, so the worker owns an on-disk Qdrant Edge store and the test opens it only after
every worker has stopped (in production workers and API share a Qdrant server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Document, DocumentState, Namespace
from app.db.session import make_engine, make_session_factory
from app.services import documents, tenants
from app.services.documents import UploadItem
from app.services.scheduling import enqueue_fairly
from retrieval.stores.edge import EdgeStore
from workers.celery_app import CeleryConfig, CeleryQueue, create_celery

pytestmark = pytest.mark.slow

BROKERS = {
    "redis": (
        os.environ.get("SHOAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    ),
    "rabbitmq": (
        os.environ.get("SHOAL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        "rabbitmq-server -detached",
    ),
}
VISIBILITY_TIMEOUT_S = 8


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    url, start = BROKERS[request.param]
    app = create_celery(CeleryConfig(broker_url=url))
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"{request.param} is not reachable at {url} ({exc}); start it: {start}")
    finally:
        app.close()
    return url


@dataclass
class Cluster:
    """A broker queue, a shared Postgres database, and `shoal worker` processes on demand."""

    broker_url: str
    queue: str
    database_url: str
    data_dir: Path
    sessions: sessionmaker[Session]
    producer: CeleryQueue
    logs: list[Path]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SHOAL_BROKER_URL": self.broker_url,
            "SHOAL_DATABASE_URL": self.database_url,
            "SHOAL_DATA_DIR": str(self.data_dir),
            "SHOAL_WORKERS__QUEUE": self.queue,
            "SHOAL_WORKERS__CONCURRENCY": "2",
            "SHOAL_WORKERS__VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "SHOAL_WORKERS__REAPER_INTERVAL_S": "1",
            "HF_HUB_OFFLINE": "1",
        }

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        shoal = Path(sys.executable).with_name("shoal")
        with log.open("wb") as out:
            return subprocess.Popen(
                [str(shoal), "worker"], env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )

    def make_namespace(self, tenant_name: str) -> Namespace:
        with self.sessions() as session:
            tenant = tenants.create_tenant(
                session, name=f"{tenant_name}-{uuid.uuid4().hex[:6]}", quotas={}
            )
            namespace = Namespace(
                tenant_id=tenant.id,
                name="docs",
                embedding_model="all-MiniLM-L6-v2",
                embedding_dimension=384,
            )
            session.add(namespace)
            session.commit()
            return namespace

    def upload(self, namespace: Namespace, texts: list[str], batch: int = 100) -> None:
        for start in range(0, len(texts), batch):
            items = [
                UploadItem(data=text.encode(), filename=f"doc-{start + i}.txt")
                for i, text in enumerate(texts[start : start + batch])
            ]
            with self.sessions() as session:
                documents.upload(
                    session,
                    namespace=namespace,
                    items=items,
                    enqueue=lambda tenant_id, ids: enqueue_fairly(
                        self.sessions, self.producer, tenant_id, ids
                    ),
                )

    def states(self, namespace: Namespace) -> dict[DocumentState, int]:
        with self.sessions() as session:
            rows = session.execute(
                select(Document.state, func.count())
                .where(Document.namespace_id == namespace.id)
                .group_by(Document.state)
            ).all()
        return {state: int(n) for state, n in rows}

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.25)
        tails = "\n".join(log.read_text(errors="replace")[-3000:] for log in self.logs)
        pytest.fail(f"timed out waiting for {what}; worker logs:\n{tails}")


@pytest.fixture
def cluster(broker_url: str, postgres_database: str, tmp_path: Path) -> Iterator[Cluster]:
    queue = f"shoal.test.{uuid.uuid4().hex[:8]}"
    celery = create_celery(CeleryConfig(broker_url=broker_url, queue=queue))
    engine = make_engine(postgres_database)
    cluster = Cluster(
        broker_url=broker_url,
        queue=queue,
        database_url=postgres_database,
        data_dir=tmp_path,
        sessions=make_session_factory(engine),
        producer=CeleryQueue(celery, queue=queue),
        logs=[],
    )
    yield cluster
    with celery.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_purge(queue)  # type: ignore[attr-defined]
        channel.queue_delete(queue)  # type: ignore[attr-defined]
    celery.close()
    engine.dispose()


def stop(worker: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    if worker.poll() is None:
        worker.send_signal(sig)
    worker.wait(timeout=60)


def corpus(n: int, topic: str) -> list[str]:
    return [
        f"Report {i} on {topic}: sample {uuid.uuid4().hex} was measured at {i % 97} units."
        for i in range(n)
    ]


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(cluster: Cluster) -> None:
    namespace = cluster.make_namespace("kill")
    total = 500
    cluster.upload(namespace, corpus(total, "sediment"))

    first = cluster.start_worker()
    cluster.wait_until(
        lambda: cluster.states(namespace).get(DocumentState.INDEXED, 0) >= 60,
        timeout_s=180,
        what="the first worker to index 60 documents",
    )
    first.kill()  # SIGKILL: no warm shutdown, no acknowledgement, mid-document
    first.wait(timeout=30)
    before = cluster.states(namespace)
    assert before.get(DocumentState.INDEXED, 0) < total, "the batch finished before the kill"

    second = cluster.start_worker()
    try:
        cluster.wait_until(
            lambda: cluster.states(namespace) == {DocumentState.INDEXED: total},
            timeout_s=300,
            what=f"all {total} documents indexed after the kill (were {before})",
        )
    finally:
        stop(second)

    with cluster.sessions() as session:
        expected_points = session.scalar(
            select(func.sum(Document.chunk_count)).where(Document.namespace_id == namespace.id)
        )
    store = EdgeStore(cluster.data_dir / "qdrant")
    try:
        stored = store.count(namespace.collection, where={"namespace_id": namespace.id})
    finally:
        store.close()
    assert expected_points is not None
    assert expected_points >= total
    assert stored == expected_points


def test_a_small_upload_is_not_starved_by_another_tenants_big_batch(cluster: Cluster) -> None:
    big = cluster.make_namespace("big")
    small = cluster.make_namespace("small")
    worker = cluster.start_worker()
    try:
        cluster.upload(big, corpus(400, "glaciers"))
        cluster.wait_until(
            lambda: cluster.states(big).get(DocumentState.INDEXED, 0) >= 20,
            timeout_s=180,
            what="the big batch to be under way",
        )
        cluster.upload(small, corpus(5, "orchids"))
        cluster.wait_until(
            lambda: cluster.states(small) == {DocumentState.INDEXED: 5},
            timeout_s=120,
            what="the small upload to be indexed",
        )
        big_states = cluster.states(big)
    finally:
        stop(worker)
    # First in, first out would have indexed all 400 before the 5.
    assert big_states.get(DocumentState.QUEUED, 0) >= 200, big_states
