"""What a running `shoal worker` recovers from, on each real broker: a store outage (the task's
retries), a message the broker lost (the reaper), and the broker itself going down between an
upload's commit and its publish (the reaper again, once the broker is back).

One worker per broker serves the whole module, as a deployed one would: reaper on (every 1 s,
for documents untouched 8 s), ``SHOAL_WORKERS__MAX_ATTEMPTS=3``, and fault drills on. The
store's failures are drills (:mod:`app.guards.faults`) that the test writes to the Redis
registry the worker reads, so the worker's real store raises what a real outage raises, inside
its real breaker. Counts of indexings come from the worker's own ``shoal_documents_total``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.config import WorkerConfig
from app.db.models import Document, DocumentState, Namespace
from app.guards.faults import REFRESH_S, Fault, RedisFaults, new_fault
from app.services.uploads import UploadItem
from app.settings import Settings
from ingestion.embedder import ModelEmbedder
from retrieval.config import CacheConfig
from tests.api.conftest import make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api, start_api
from tests.services import PrivateRedis
from tests.workers.cluster import Broker, Cluster, Worker, corpus
from tests.workers.conftest import make_cluster
from workers.celery_app import CeleryConfig, CeleryQueue, create_celery

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 3


@dataclass
class Deployment:
    cluster: Cluster
    worker: Worker
    faults: RedisFaults

    def drill(self, fault: Fault | None) -> None:
        """Start ``fault`` (None: clear them all) and wait until the worker sees it: each
        process reads the registry again once its copy is :data:`REFRESH_S` old."""
        if fault is None:
            self.faults.clear()
        else:
            self.faults.add(fault)
        time.sleep(2 * REFRESH_S)

    def document(self, namespace: Namespace, document_id: str) -> Document:
        return self.cluster.documents(namespace)[document_id]

    def settled(self, namespace: Namespace, document_id: str) -> bool:
        state = self.document(namespace, document_id).state
        return state in (DocumentState.INDEXED, DocumentState.FAILED)

    def reaper_rounds(self) -> int:
        """Rounds in which the worker's reaper queued documents again (its log says so)."""
        return self.worker.log.read_text().count('"stuck_documents_requeued"')


@pytest.fixture(scope="module")
def deployment(
    broker: Broker, private_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    faults = RedisFaults(private_redis.url, CacheConfig())
    with make_cluster(broker, tmp_path_factory.mktemp("recovery")) as cluster:
        worker = cluster.start_worker(
            SHOAL_REDIS_URL=private_redis.url,
            SHOAL_ENABLE_FAULTS="true",
            SHOAL_WORKERS__MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        )
        try:
            yield Deployment(cluster, worker, faults)
        finally:
            faults.clear()
            faults.close()


def test_store_outages_are_retried_with_backoff_and_bad_input_fails_at_once(
    deployment: Deployment,
) -> None:
    cluster, worker = deployment.cluster, deployment.worker
    namespace = cluster.make_namespace("retries")
    indexed, failed = worker.documents_total("indexed"), worker.documents_total("failed")

    # Bad input fails at once, with the parser's reason, and is never tried again.
    [bad] = cluster.upload(namespace, [UploadItem(b"%PDF-1.7 truncated", "broken.pdf")])
    cluster.wait_until(
        lambda: deployment.settled(namespace, bad), timeout_s=60, what="the broken PDF to settle"
    )
    refused = deployment.document(namespace, bad)
    assert (refused.state, refused.attempts) == (DocumentState.FAILED, 1)
    assert refused.reason
    assert "gave up" not in refused.reason

    # A blip: the store fails the first try and is back before the retry's backoff ends (at
    # least 1 s; the worker sees a cleared drill within REFRESH_S).
    deployment.drill(new_fault("vector_store", "error"))
    [blip] = cluster.upload(namespace, ["Kelp forests grow up to half a metre a day."])
    cluster.wait_until(
        lambda: (
            (document := deployment.document(namespace, blip)).attempts >= 1
            and document.state not in (DocumentState.PARSING, DocumentState.EMBEDDING)
        ),
        timeout_s=60,
        what="the first try to end",
    )
    first_try = deployment.document(namespace, blip)
    assert first_try.state == DocumentState.QUEUED, first_try.reason  # put back for a retry
    deployment.faults.clear()
    cluster.wait_until(
        lambda: deployment.settled(namespace, blip), timeout_s=60, what="the retry to settle"
    )
    recovered = deployment.document(namespace, blip)
    assert recovered.state == DocumentState.INDEXED, recovered.reason
    assert recovered.attempts >= 2

    # An outage that outlasts every try: after MAX_ATTEMPTS tries the document fails with the
    # reason, instead of staying pending.
    deployment.drill(new_fault("vector_store", "error"))
    [down] = cluster.upload(namespace, ["Sea urchins graze kelp down to bare rock."])
    cluster.wait_until(
        lambda: deployment.settled(namespace, down), timeout_s=60, what="the retries to run out"
    )
    deployment.drill(None)
    gave_up = deployment.document(namespace, down)
    assert (gave_up.state, gave_up.attempts) == (DocumentState.FAILED, MAX_ATTEMPTS)
    assert gave_up.reason is not None
    assert gave_up.reason.startswith("gave up after retries: injected fault: vector_store")

    assert worker.documents_total("indexed") - indexed == 1
    assert worker.documents_total("failed") - failed == 2


def test_the_reaper_sends_again_documents_whose_messages_the_broker_lost(
    deployment: Deployment,
) -> None:
    cluster, worker = deployment.cluster, deployment.worker
    namespace = cluster.make_namespace("lost")
    indexed, rounds = worker.documents_total("indexed"), deployment.reaper_rounds()
    # Published to a queue no worker reads, then purged there: the messages are gone for good.
    lost_queue = f"shoal.lost.{uuid.uuid4().hex[:8]}"
    celery = create_celery(CeleryConfig(broker_url=cluster.broker.url, queue=lost_queue))
    try:
        ids = cluster.upload(
            namespace, corpus(5, "kelp"), queue=CeleryQueue(celery, queue=lost_queue)
        )
        assert cluster.purge(lost_queue) == len(ids)
    finally:
        celery.close()

    cluster.wait_until(
        lambda: cluster.states(namespace) == {DocumentState.INDEXED: len(ids)},
        timeout_s=90,
        what="the reaper to send the lost documents again",
    )
    assert worker.documents_total("indexed") - indexed == len(ids)
    assert {d.attempts for d in cluster.documents(namespace).values()} == {1}
    assert deployment.reaper_rounds() > rounds


@pytest.fixture
def api(deployment: Deployment, tmp_path: Path, embedder: ModelEmbedder) -> Iterator[Api]:
    """The app in process, publishing to the deployment's broker and queue."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=deployment.cluster.database_url,
        broker_url=deployment.cluster.broker.url,
        workers=WorkerConfig(queue=deployment.cluster.queue),
    )
    yield from start_api(settings, embedder)


def test_an_upload_during_a_broker_outage_is_accepted_and_indexed_after_it(
    deployment: Deployment, api: Api
) -> None:
    cluster, worker = deployment.cluster, deployment.worker
    rounds = deployment.reaper_rounds()
    tenant = make_tenant(api, "outage")
    make_namespace(api, tenant, "docs")
    before = upload(
        api, tenant, "docs", [{"filename": "a.txt", "text": "Spring tides follow the moon."}]
    )
    assert wait_for_job(api, tenant, before["job_id"])["state"] == "succeeded"

    # RabbitMQ's node shuts down (and later boots from its own database); Redis is killed
    # (and comes back empty).
    cluster.broker.server.stop()
    try:
        accepted = upload(
            api,
            tenant,
            "docs",
            [
                {"filename": "b.txt", "text": "Neap tides come at the quarter moons."},
                {"filename": "c.txt", "text": "A tidal bore runs up the Severn."},
            ],
        )  # a 202: the rows are committed, the publish failed
        job = api.client.get(
            f"/v1/jobs/{accepted['job_id']}", headers=api.headers(tenant.write_key)
        ).json()
        assert (job["state"], job["counts"]["queued"]) == ("queued", 2)
    finally:
        cluster.broker.server.start()

    done = wait_for_job(api, tenant, accepted["job_id"], timeout_s=180)
    assert done["state"] == "succeeded", done
    # The worker lived through the outage, and its reaper sent what the API could not.
    assert worker.process.poll() is None
    assert deployment.reaper_rounds() > rounds
