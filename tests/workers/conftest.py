"""Private brokers (one RabbitMQ node, one Redis server, for the whole run) and clusters on them.

Private, not the machine's shared brokers: the tests here stop a broker, and ask RabbitMQ for
its count of unacknowledged messages, which only the node's own tools can tell. Each cluster
has a database of its own too: a worker's reaper queues every pending document it finds, so
one test's leftovers must not reach another test's workers.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.db.migrate import upgrade
from app.db.session import make_engine, make_session_factory
from tests.conftest import new_postgres_database
from tests.services import PrivateRabbitMQ, PrivateRedis
from tests.workers.cluster import Broker, Cluster
from workers.celery_app import CeleryConfig, CeleryQueue, create_celery


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    root = Path(tempfile.mkdtemp(prefix="shoal-rabbitmq-"))
    server = PrivateRabbitMQ(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["rabbitmq", "redis"])
def broker(request: pytest.FixtureRequest) -> Broker:
    server = request.getfixturevalue(f"private_{request.param}")
    return Broker(request.param, server)


@contextmanager
def cluster_database() -> Iterator[str]:
    """A new, migrated database at SHOAL_TEST_POSTGRES_URL's server; dropped afterwards."""
    with new_postgres_database() as url:
        upgrade(url)
        yield url


@contextmanager
def make_cluster(broker: Broker, data_dir: Path) -> Iterator[Cluster]:
    """A cluster on ``broker`` with a queue and a database of its own; every worker it started
    is killed, and its queue deleted, afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    queue = f"shoal.test.{uuid.uuid4().hex[:8]}"
    celery = create_celery(CeleryConfig(broker_url=broker.url, queue=queue))
    with cluster_database() as database_url:
        engine = make_engine(database_url)
        cluster = Cluster(
            broker=broker,
            queue=queue,
            database_url=database_url,
            data_dir=data_dir,
            sessions=make_session_factory(engine),
            celery=celery,
            producer=CeleryQueue(celery, queue=queue),
        )
        try:
            yield cluster
        finally:
            cluster.close()
            cluster.purge()
            with celery.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)  # type: ignore[attr-defined]
            celery.close()
            engine.dispose()


@pytest.fixture
def cluster(broker: Broker, tmp_path: Path) -> Iterator[Cluster]:
    with make_cluster(broker, tmp_path) as made:
        yield made
