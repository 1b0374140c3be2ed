"""Distributed indexing against real brokers and real `shoal worker` processes.

Each test runs on RabbitMQ and on Redis (private servers, :mod:`tests.workers.conftest`), with
a Postgres database of its own that its workers share. "Indexed once" is counted, not inferred
from idempotent point ids: each worker's ``shoal_documents_total{outcome="indexed"}`` counts the
indexings it completed, and a document's ``attempts`` counts the times a worker started on it.
"""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import func, select

from app.db.models import Document, DocumentState, Namespace
from retrieval.stores.edge import EdgeStore
from tests.services import PrivateRabbitMQ
from tests.workers.cluster import REAPER_OFF, Cluster, Worker, corpus

pytestmark = pytest.mark.slow

IN_FLIGHT = (DocumentState.PARSING, DocumentState.EMBEDDING)


def freeze_with_documents_in_flight(cluster: Cluster, worker: Worker, namespace: Namespace) -> None:
    """Stop ``worker`` (SIGSTOP) at a moment when it is indexing and the broker holds a message
    for every document not yet indexed: from then on it acknowledges nothing and commits
    nothing, so what the database and the broker show is what a kill takes away.

    Not a moment between two documents, nor one inside Kombu's Redis transport between taking
    a message (BRPOP) and recording it as unacknowledged: a kill there loses that message,
    and only the reaper sends it again (test_recovery). With late acknowledgement off, no
    moment qualifies: a document in flight has no message left.
    """
    for _ in range(100):
        worker.process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # what it sent before it stopped (a commit, an ack) lands meanwhile
        documents = cluster.documents(namespace).values()
        unfinished = {d.id for d in documents if d.state != DocumentState.INDEXED}
        if any(d.state in IN_FLIGHT for d in documents) and cluster.broker.holds_a_message_for_each(
            cluster.queue, unfinished
        ):
            return
        worker.process.send_signal(signal.SIGCONT)  # not such a moment: let it run, again
        time.sleep(0.05)
    pytest.fail(
        "never caught the worker indexing while the broker held a message for every "
        f"unfinished document; {cluster.broker.describe(cluster.queue)}"
    )


@pytest.mark.timeout(900)  # two workers start: ~15 s each here, minutes on a crowded machine
def test_a_killed_workers_documents_in_flight_are_delivered_again_and_indexed_once(
    cluster: Cluster,
) -> None:
    # Reaper off: the broker's redelivery alone must bring back what the killed worker held.
    namespace = cluster.make_namespace("kill")
    total = 60
    cluster.upload(namespace, corpus(total, "sediment"))
    first = cluster.start_worker(**REAPER_OFF)
    cluster.wait_until(
        lambda: cluster.states(namespace).get(DocumentState.INDEXED, 0) >= 10,
        timeout_s=120,
        what="the first worker to index 10 documents",
    )
    freeze_with_documents_in_flight(cluster, first, namespace)
    held = cluster.broker.unacknowledged(cluster.queue)
    first.stop(signal.SIGKILL)  # no warm shutdown, no acknowledgement, mid-document

    at_kill = cluster.documents(namespace)
    in_flight = {d.id for d in at_kill.values() if d.state in IN_FLIGHT}
    indexed_before = sum(d.state == DocumentState.INDEXED for d in at_kill.values())
    assert in_flight, "no document was in flight at the kill"
    assert indexed_before < total, "the batch finished before the kill"
    # Late acknowledgement: each document in flight still had its message unacknowledged.
    server = cluster.broker.server
    if isinstance(held, int) and isinstance(server, PrivateRabbitMQ):  # the node's own count
        assert held >= len(in_flight)

        # The connection died with the worker: the node takes back every unfinished message
        # (and, if the kill fell between a document's commit and its acknowledgement, that
        # finished document's message too: it is redelivered and found already indexed).
        def all_back() -> bool:
            ready, unacknowledged = server.queue_counts(cluster.queue)
            return unacknowledged == 0 and ready >= total - indexed_before

        cluster.wait_until(
            all_back,
            timeout_s=30,
            what="RabbitMQ to hold every unfinished document's message as ready again",
            state=lambda: (server.queue_counts(cluster.queue), total - indexed_before),
        )
    else:  # Redis: the messages themselves, restored after the visibility timeout
        assert isinstance(held, list)
        assert in_flight <= set(held), (in_flight, held)

    second = cluster.start_worker(**REAPER_OFF)
    cluster.wait_until(
        lambda: cluster.states(namespace) == {DocumentState.INDEXED: total},
        timeout_s=120,
        what=f"all {total} documents indexed after the kill",
        state=lambda: (
            {
                (d.id, d.state, d.attempts, d.reason)
                for d in cluster.documents(namespace).values()
                if d.state != DocumentState.INDEXED
            },
            cluster.broker.describe(cluster.queue),
        ),
    )
    # Counted: the survivor completed exactly the documents not indexed at the kill, each once
    # (an already indexed document is skipped before it counts), ...
    assert second.documents_total("indexed") == total - indexed_before
    # ... and was the only one to start the documents in flight after the killed worker did.
    attempts = {d.id: d.attempts for d in cluster.documents(namespace).values()}
    assert {attempts[d] for d in in_flight} == {2}
    assert {n for d, n in attempts.items() if d not in in_flight} == {1}
    second.stop()

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
    worker.stop()
    # First in, first out would have indexed all 400 before the 5.
    assert big_states.get(DocumentState.QUEUED, 0) >= 200, big_states
