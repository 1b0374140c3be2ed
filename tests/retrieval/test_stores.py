"""What each engine adds to the shared contract: Edge's files and locks, the factory's choice."""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc  # type: ignore[import-untyped]  # grpcio ships no types
import httpx
import numpy as np
import pytest
import qdrant_edge
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from harness.servers import free_port
from retrieval.config import VectorStoreConfig
from retrieval.errors import StoreRequestError, StoreUnavailableError
from retrieval.stores import CollectionSpec, EdgeStore, Point, ServerStore, make_store
from retrieval.stores.base import SearchRequest
from retrieval.stores.server import is_refusal

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


# --- real faults under a running store -----------------------------------------------------------
# Tests run as root, whom chmod 000 does not stop, so the directory is taken away instead: the
# faults below stop root as they stop anyone, and chmod stops every other user the same way
# (the store's check is a stat inside the directory, which needs its search permission).


def _removed(shard: Path) -> Callable[[], None]:
    backup = shard.with_name("backup")
    shutil.copytree(shard, backup)
    shutil.rmtree(shard)

    def restore() -> None:
        shutil.copytree(backup, shard)

    return restore


def _moved_away(shard: Path) -> Callable[[], None]:
    away = shard.with_name("away")
    shard.rename(away)

    def restore() -> None:
        away.rename(shard)

    return restore


def _replaced_by_a_file(shard: Path) -> Callable[[], None]:
    away = shard.with_name("away")
    shard.rename(away)
    shard.write_text("a file where the shard's directory was")

    def restore() -> None:
        shard.unlink()
        away.rename(shard)

    return restore


FAULTS = {"removed": _removed, "moved away": _moved_away, "replaced by a file": _replaced_by_a_file}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_edge_fails_while_an_open_collections_directory_is_gone_and_serves_it_when_back(
    tmp_path: Path, fault: str
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns_a", SPEC)
    store.upsert("ns_a", points(10))
    query = SearchRequest([1.0, 0.0, 0.0, 0.0], where={}, limit=3)
    assert len(store.search("ns_a", query)) == 3  # open, and read from memory maps from now on

    restore = FAULTS[fault](tmp_path / "qdrant" / "ns_a")

    for call in (
        lambda: store.search("ns_a", query),
        lambda: store.count("ns_a", where={}),
        lambda: store.upsert("ns_a", points(1, seed=9)),
        lambda: store.delete("ns_a", where={"document_id": "d"}),
        lambda: store.ensure_collection("ns_a", SPEC),  # never recreated empty
    ):
        with pytest.raises(StoreUnavailableError, match="'ns_a' is lost"):
            call()
    with pytest.raises(StoreUnavailableError, match="ns_a"):
        store.ping()  # readiness says which
    store.ensure_collection("ns_b", SPEC)  # the others are untouched

    restore()

    store.ping()
    assert len(store.search("ns_a", query)) == 3
    assert store.count("ns_a", where={}) == 10
    store.upsert("ns_a", points(5, seed=1))  # written where the shard is now
    store.close()
    reopened = EdgeStore(tmp_path / "qdrant")
    assert reopened.count("ns_a", where={}) == 15
    reopened.close()


def test_edge_reloads_a_collection_whose_directory_was_replaced_between_calls(
    tmp_path: Path,
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    store.ensure_collection("ns_a", SPEC)
    store.upsert("ns_a", points(10))
    store.close()
    shutil.copytree(tmp_path / "qdrant" / "ns_a", tmp_path / "copy")
    store = EdgeStore(tmp_path / "qdrant")
    assert store.count("ns_a", where={}) == 10

    shutil.rmtree(tmp_path / "qdrant" / "ns_a")  # restored from a copy before any call noticed
    (tmp_path / "copy").rename(tmp_path / "qdrant" / "ns_a")

    store.upsert("ns_a", points(5, seed=1))  # into the directory there now, not the old one
    store.close()
    reopened = EdgeStore(tmp_path / "qdrant")
    assert reopened.count("ns_a", where={}) == 15
    reopened.close()


def test_edge_refuses_bm25_on_a_shard_without_a_text_index(tmp_path: Path) -> None:
    # A shard made before hybrid search, never passed through ensure_collection since.
    config = qdrant_edge.EdgeConfig(
        vectors=qdrant_edge.EdgeVectorParams(size=4, distance=qdrant_edge.Distance.Cosine)
    )
    (tmp_path / "qdrant").mkdir()
    qdrant_edge.EdgeShard.create(str(tmp_path / "qdrant" / "ns_a"), config).close()
    store = EdgeStore(tmp_path / "qdrant")
    lexical = SearchRequest([1.0, 0.0, 0.0, 0.0], where={}, limit=3, text="otters", mode="lexical")

    with pytest.raises(StoreRequestError, match="text index"):
        store.search("ns_a", lexical)
    store.close()


@pytest.fixture
def not_qdrant(tmp_path: Path) -> Iterator[str]:
    """A real web server that is no Qdrant (Python's, serving an empty directory): every path
    Qdrant's client asks for is a 404, as behind a wrong ``SHOAL_QDRANT_URL``."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_that_answers_4xx_refuses_and_readiness_still_fails(not_qdrant: str) -> None:
    store = ServerStore(QdrantClient(url=not_qdrant, timeout=5, check_compatibility=False))
    query = SearchRequest([1.0, 0.0, 0.0, 0.0], where={}, limit=1)

    with pytest.raises(StoreRequestError) as refused:
        store.search("ns_a", query)
    assert refused.value.status_code == 404
    assert isinstance(refused.value.__cause__, UnexpectedResponse)
    with pytest.raises(StoreRequestError):
        store.count("ns_a", where={})
    with pytest.raises(StoreUnavailableError):
        store.ping()  # whatever answers there, it cannot serve calls
    store.close()


@pytest.mark.parametrize(
    ("status", "refused"),
    [(400, True), (404, True), (409, True), (422, True), (401, False), (403, False),
     (408, False), (429, False), (500, False), (502, False), (503, False)],
)  # fmt: skip
def test_http_4xx_is_a_refusal_except_refused_credentials_and_not_now(
    status: int, refused: bool
) -> None:
    response = httpx.Response(status, request=httpx.Request("GET", "http://qdrant/collections"))
    assert is_refusal(UnexpectedResponse.for_response(response)) is refused


@pytest.mark.parametrize(
    ("code", "refused"),
    [(grpc.StatusCode.INVALID_ARGUMENT, True), (grpc.StatusCode.NOT_FOUND, True),
     (grpc.StatusCode.FAILED_PRECONDITION, True), (grpc.StatusCode.UNAVAILABLE, False),
     (grpc.StatusCode.DEADLINE_EXCEEDED, False), (grpc.StatusCode.UNAUTHENTICATED, False),
     (grpc.StatusCode.RESOURCE_EXHAUSTED, False), (grpc.StatusCode.INTERNAL, False)],
)  # fmt: skip
def test_grpc_codes_of_a_refused_request_are_refusals(code: object, refused: bool) -> None:
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert is_refusal(error) is refused


def test_transport_failures_are_outages_and_local_mode_value_errors_refusals() -> None:
    assert not is_refusal(ResponseHandlingException(httpx.ConnectError("refused")))
    assert not is_refusal(RuntimeError("QdrantLocal instance is closed"))
    assert not is_refusal(OSError("disk"))
    assert is_refusal(ValueError("Collection ns_a not found"))
