"""What each engine adds to the shared contract: Edge's files and locks, the factory's choice."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge
from pydantic import ValidationError

from retrieval.config import VectorStoreConfig
from retrieval.errors import StoreUnavailableError
from retrieval.stores import CollectionSpec, EdgeStore, Point, ServerStore, make_store
from retrieval.stores.base import SearchRequest

SPEC = CollectionSpec(dimension=4)


def points(count: int, *, seed: int = 0, document: str = "d") -> list[Point]:
    vectors = np.random.default_rng(seed).normal(size=(count, 4))
    return [
        Point(
            id=str(uuid.uuid4()),
            vector=[float(x) for x in v],
            payload={"tenant_id": "t", "namespace_id": "n", "document_id": document},
        )
        for v in vectors
    ]


def test_edge_keeps_each_collection_in_its_own_directory_and_drop_removes_it(
    tmp_path: Path,
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns_a", SPEC)
    store.ensure_collection("ns_b", SPEC)
    assert sorted(p.name for p in (tmp_path / "qdrant").iterdir()) == ["ns_a", "ns_b"]

    store.drop_collection("ns_a")

    assert [p.name for p in (tmp_path / "qdrant").iterdir()] == ["ns_b"]
    store.close()


def test_edge_creates_the_payload_indexes_a_spec_gains(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns_a", SPEC)
    store.ensure_collection("ns_a", CollectionSpec(dimension=4, indexed_fields={"year": "integer"}))
    store.close()

    shard = qdrant_edge.EdgeShard.load(str(tmp_path / "qdrant" / "ns_a"))
    try:
        schema = shard.info().payload_schema
        assert set(schema) == {"tenant_id", "namespace_id", "document_id", "text", "year"}
        assert schema["year"].data_type == qdrant_edge.PayloadSchemaType.Integer
    finally:
        shard.close()


def test_edge_refuses_to_reopen_a_collection_with_another_dimension(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns_a", SPEC)
    store.close()

    reopened = EdgeStore(tmp_path / "qdrant")
    with pytest.raises(StoreUnavailableError, match="incompatible"):
        reopened.ensure_collection("ns_a", CollectionSpec(dimension=8))
    reopened.close()


def test_edge_shard_held_by_another_owner_is_unavailable(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "qdrant")
    first.ensure_collection("ns_a", SPEC)
    second = EdgeStore(tmp_path / "qdrant")  # as a second process would: Edge's WAL lock

    with pytest.raises(StoreUnavailableError, match="WouldBlock") as caught:
        second.count("ns_a", where={})

    assert caught.value.__cause__ is not None
    first.close()
    second.close()


def test_edge_writes_not_yet_flushed_survive_a_killed_process(tmp_path: Path) -> None:
    # The writer flushes only its first write (then never again within an hour) and dies
    # without closing: what survives is what Edge's write-ahead log holds.
    script = (
        "import os, signal, sys\n"
        "from tests.retrieval.test_stores import SPEC, points\n"
        "from retrieval.stores import EdgeStore\n"
        "store = EdgeStore(__import__('pathlib').Path(sys.argv[1]), flush_interval_s=3600)\n"
        "store.ensure_collection('ns_a', SPEC)\n"
        "store.upsert('ns_a', points(10, seed=1))\n"
        "store.upsert('ns_a', points(25, seed=2, document='late'))\n"
        "store.delete('ns_a', where={'document_id': 'd'})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = tmp_path / "qdrant"
    killed = subprocess.run([sys.executable, "-c", script, str(root)], check=False)
    assert killed.returncode == -signal.SIGKILL

    reopened = EdgeStore(root)
    try:
        assert reopened.count("ns_a", where={}) == 25
        assert reopened.count("ns_a", where={"document_id": "late"}) == 25
    finally:
        reopened.close()


def test_edge_serves_readers_while_a_writer_writes(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns_a", SPEC)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                store.search(
                    "ns_a", SearchRequest([1.0, 0.0, 0.0, 0.0], where={"tenant_id": "t"}, limit=5)
                )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for batch in range(20):
        store.upsert("ns_a", points(10, seed=batch))
    done.set()
    for reader in readers:
        reader.join()

    assert errors == []
    assert store.count("ns_a", where={}) == 200
    store.close()


def test_edge_ping_fails_when_the_root_cannot_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "qdrant").write_text("a file where the directory should be")
    store = EdgeStore(tmp_path / "qdrant")
    with pytest.raises(StoreUnavailableError, match="unusable"):
        store.ping()


def test_edge_ping_creates_a_missing_root(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "data" / "qdrant")
    store.ping()
    assert (tmp_path / "data" / "qdrant").is_dir()


def test_make_store_embeds_edge_under_the_data_dir_without_a_url(tmp_path: Path) -> None:
    store = make_store(VectorStoreConfig(), data_dir=tmp_path)
    assert isinstance(store, EdgeStore)
    store.ensure_collection("ns_a", SPEC)
    assert (tmp_path / "qdrant" / "ns_a").is_dir()
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_make_store_uses_the_server_when_a_url_is_set_and_a_dead_one_is_unavailable() -> None:
    config = VectorStoreConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=1)

    store = make_store(config, data_dir=Path("unused"))  # contacts nothing yet

    assert isinstance(store, ServerStore)
    with pytest.raises(StoreUnavailableError) as caught:
        store.ping()
    assert caught.value.__cause__ is not None
    with pytest.raises(StoreUnavailableError):
        store.search("ns_a", SearchRequest([1.0, 0.0, 0.0, 0.0], where={}, limit=1))
    store.close()


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        VectorStoreConfig(timeout_s=0)


def test_the_api_key_is_kept_secret() -> None:
    config = VectorStoreConfig(url="https://qdrant.example", api_key="s3cret")
    assert "s3cret" not in repr(config)
