"""The embedded vector store: Qdrant Edge, one shard directory per collection under a root.

Edge runs inside this process, so there is no server to operate; the price is that one process
owns the shards. With the write-ahead log on (the default, and it must stay on: without it Edge
takes no lock and a second process could open the same shard), a second open of a shard fails
at once with ``Can't init WAL: WouldBlock``, in this process or another. So each shard is opened
once, cached, and its handle shared by every thread; the API server and an in-process worker
share one :class:`EdgeStore`. A multi-process deployment uses the Qdrant server instead.

Edge raises bare ``Exception`` (and ``TypeError`` for a badly typed argument) with no exception
hierarchy of its own, so every call into it is wrapped by
:func:`retrieval.stores.edge_terms.engine_errors`, which tells a refused request from a failure
by the message. That module also says Shoal's requests (indexes, filters, fusion) in Edge's terms.

An open shard reads from memory maps, so a shard directory removed under a running store (or
moved, or replaced by a file) would go unnoticed by searches, and its writes would go to a
write-ahead log that no longer has a name, lost at the next start. Each call checks the
directory first (a stat, microseconds) and fails while it is gone; see :meth:`EdgeStore._open`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import qdrant_edge as edge
import structlog

from retrieval import filters as f
from retrieval.errors import StoreRequestError, StoreUnavailableError
from retrieval.stores.base import (
    TEXT_FIELD,
    CollectionSpec,
    Hit,
    Point,
    SearchRequest,
    Where,
    check_collection_name,
    cosines,
    payload_indexes,
)
from retrieval.stores.edge_terms import (
    engine_errors,
    index_params,
    text_index,
    to_filter,
    to_fusion,
)

# Seconds between flushes of a shard's segments (see EdgeStore._flush_if_due).
FLUSH_INTERVAL_S = 5.0
# Edge writes this file when it creates a shard; a directory without it holds no shard.
_SHARD_MARKER = "edge_config.json"
log = structlog.get_logger(__name__)


class EdgeStore:
    """A :class:`~retrieval.stores.base.VectorStore` on Qdrant Edge, rooted at ``root``.

    Shards open lazily on first use (loaded if ``root/<name>`` holds one, else created by
    :meth:`ensure_collection`) and stay open until :meth:`drop_collection` or :meth:`close`.
    Only one ``EdgeStore`` per root may be live at a time, across all processes.

    A call racing :meth:`drop_collection` on the same collection may fail with
    :class:`StoreUnavailableError` (its handle was closed under it); callers drop a collection
    only after deleting the rows that lead to it, so nothing should still be reading it.

    A collection whose directory vanishes while its shard is open (removed, moved away, replaced
    by a file, unreadable) is *lost*: every call on it fails with :class:`StoreUnavailableError`
    (it never reads as empty, is never recreated) until the directory is back; then its shard
    serves again, the same handle if the same directory came back, else one loaded from it.
    """

    def __init__(self, root: Path, *, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._root = root
        self._flush_interval_s = flush_interval_s
        self._flushed_at: dict[str, float] = {}  # monotonic time of each shard's last flush
        self._shards: dict[str, edge.EdgeShard] = {}
        # Each open shard's directory as (device, inode), to notice one replaced under it.
        self._identity: dict[str, tuple[int, int]] = {}
        # Lost collections: the shard each had open, and the directory it was opened from.
        self._lost: dict[str, tuple[edge.EdgeShard, tuple[int, int]]] = {}
        self._retired: list[edge.EdgeShard] = []  # shards of directories since replaced
        # Guards the cache and every open, create, close and drop. Reads and writes on an open
        # shard need no lock of ours: Edge's handles are safe to share between threads.
        self._lock = threading.Lock()
        self._closed = False

    def ensure_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection if absent (idempotent), with cosine distance and its indexes.

        Payload indexes the shard lacks are added, so a spec that gained a field takes effect.

        Raises:
            ValueError: invalid name, or ``spec`` names an unknown index type.
            StoreUnavailableError: Edge failed, e.g. the shard exists with another dimension.
        """
        check_collection_name(name)
        indexes = payload_indexes(spec)
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=spec.dimension, distance=edge.Distance.Cosine)
        )
        shard = self._open(name, config=config)
        with engine_errors("index", name):
            existing = shard.info().payload_schema
            missing = {f: t for f, t in indexes.items() if f not in existing}
            for field, field_type in missing.items():
                params = index_params(field, field_type)
                shard.update(edge.UpdateOperation.create_field_index(field, params))
            if TEXT_FIELD not in existing:
                # Shards created before hybrid search gain the index here, built from the
                # payloads they hold.
                shard.update(edge.UpdateOperation.create_field_index(TEXT_FIELD, text_index()))
            if missing or TEXT_FIELD not in existing:
                shard.flush()

    def drop_collection(self, name: str) -> None:
        """Close the collection's shard and delete its directory; no error if it does not exist.

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: the shard could not be closed or its files removed.
        """
        path = self._root / check_collection_name(name)
        with self._lock:
            self._check_open()
            shard = self._shards.pop(name, None)
            self._flushed_at.pop(name, None)
            self._identity.pop(name, None)
            if name in self._lost:
                self._retired.append(self._lost.pop(name)[0])
            with engine_errors("drop", name):
                if shard is not None:
                    shard.close()
                if path.exists():
                    shutil.rmtree(path)

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or overwrite ``points`` by id, in the write-ahead log before returning.

        Raises:
            ValueError: invalid name.
            StoreRequestError: the collection does not exist, or Edge refused the points (a
                vector of the wrong dimension).
            StoreUnavailableError: Edge failed, or the collection is lost.
        """
        shard = self._open(check_collection_name(name))
        if shard is None:
            raise StoreRequestError(f"collection {name!r} does not exist")
        if not points:
            return
        edge_points = [
            edge.Point(id=p.id, vector=[float(x) for x in p.vector], payload=dict(p.payload))
            for p in points
        ]
        with engine_errors("upsert into", name):
            shard.update(edge.UpdateOperation.upsert_points(edge_points))
            self._flush_if_due(name, shard)

    def search(self, name: str, request: SearchRequest) -> list[Hit]:
        """The best points for ``request``, best first ([] if the collection is missing).

        Hybrid mode is one engine call: two prefetches (dense, BM25) fused by DBSF or weighted RRF.

        Raises:
            ValueError: invalid name.
            StoreRequestError: Edge refused the request (a vector of the wrong dimension, BM25 on
                a shard without a text index).
            StoreUnavailableError: Edge failed, or the collection is lost.
        """
        shard = self._open(check_collection_name(name))
        if shard is None:
            return []
        vector = [float(x) for x in request.vector]
        conditions = to_filter(request.where, request.filter)
        dense = edge.Query.Nearest(vector)
        lexical = edge.TextQuery(TEXT_FIELD, request.text or "")
        if request.mode == "hybrid":
            query = edge.QueryRequest(
                prefetches=[
                    edge.Prefetch(limit=request.candidates, query=dense, filter=conditions),
                    edge.Prefetch(limit=request.candidates, query=lexical, filter=conditions),
                ],
                query=to_fusion(request),
                limit=request.limit,
                with_payload=True,
                with_vector=True,
            )
        else:
            query = edge.QueryRequest(
                query=dense if request.mode == "dense" else lexical,
                limit=request.limit,
                filter=conditions,
                with_payload=True,
                with_vector=request.mode != "dense",
            )
        with engine_errors("search", name):
            scored = shard.query(query)
        # Edge returns UUID ids as uuid.UUID; the Protocol speaks strings.
        if request.mode == "dense":
            similarities = [float(s.score) for s in scored]
        else:
            similarities = cosines(vector, [s.vector for s in scored])  # type: ignore[misc]
        return [
            Hit(id=str(s.id), score=float(s.score), payload=s.payload or {}, similarity=sim)
            for s, sim in zip(scored, similarities, strict=True)
        ]

    def delete(self, name: str, *, where: Where) -> None:
        """Delete every point matching ``where`` (all of them if empty), in the log on return.

        No error if the collection does not exist.

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Edge failed.
        """
        shard = self._open(check_collection_name(name))
        if shard is None:
            return
        with engine_errors("delete from", name):
            shard.update(
                edge.UpdateOperation.delete_points_by_filter(to_filter(where) or edge.Filter())
            )
            self._flush_if_due(name, shard)

    def count(self, name: str, *, where: Where, filter: f.Expr | None = None) -> int:
        """Exact number of points matching ``where`` and ``filter`` (0 if the collection is
        missing).

        Raises:
            ValueError: invalid name.
            StoreUnavailableError: Edge failed.
        """
        shard = self._open(check_collection_name(name))
        if shard is None:
            return 0
        with engine_errors("count", name):
            request = edge.CountRequest(exact=True, filter=to_filter(where, filter))
            return shard.count(request)

    def check_open(self) -> None:
        """Never refuses untried: this store has no breaker (see ``VectorStore.check_open``)."""

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the root is a writable directory and no
        collection is lost.

        Creates the root if it is missing, as the first collection would. A lost collection
        whose directory is back counts as found (its shard serves again on next use), so a ping
        can be the probe that closes the breaker once the directory is restored.
        """
        self._check_open()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            # A real file, not os.access: it also catches a read-only mount or an ACL.
            with tempfile.TemporaryFile(dir=self._root):
                pass
        except OSError as exc:
            raise StoreUnavailableError(f"vector store root {self._root} unusable: {exc}") from exc
        with self._lock:
            lost = sorted(n for n in self._lost if _identity(self._root / n) is None)
        if lost:
            raise StoreUnavailableError(
                f"collections lost, their directories gone from {self._root}: {', '.join(lost)}"
            )

    def close(self) -> None:
        """Close every open shard; every later call raises :class:`StoreUnavailableError`.

        Closing twice is a no-op. Raises :class:`StoreUnavailableError` if a shard failed to
        close (the others are still closed).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            shards, self._shards = self._shards, {}
            self._identity.clear()
            gone = [shard for shard, _ in self._lost.values()] + self._retired
            self._lost, self._retired = {}, []
        for shard in gone:
            try:
                shard.close()  # nothing to flush: no call reached it since it was lost
            except Exception as exc:  # Edge's only exception type; its files may be gone
                log.warning("edge_lost_shard_not_closed", error=str(exc))
        failures = []
        for name, shard in shards.items():
            try:
                shard.flush()
                shard.close()
            except Exception as exc:  # Edge's only exception type
                failures.append(f"{name}: {exc}")
        if failures:
            raise StoreUnavailableError(f"Qdrant Edge failed to close {'; '.join(failures)}")

    @overload
    def _open(self, name: str, *, config: edge.EdgeConfig) -> edge.EdgeShard: ...

    @overload
    def _open(self, name: str, *, config: None = None) -> edge.EdgeShard | None: ...

    def _open(self, name: str, *, config: edge.EdgeConfig | None = None) -> edge.EdgeShard | None:
        """The open shard for ``name``; with ``config``, created if absent, else None if absent.

        An open shard is returned only while its directory is still the one it was opened from
        (see the class docstring for a lost one).

        Raises:
            StoreUnavailableError: the collection is lost, or Edge failed to open it.
        """
        path = self._root / name
        with self._lock:
            self._check_open()
            identity = _identity(path)
            shard = self._shards.get(name)
            if shard is not None:
                if identity == self._identity[name]:
                    return shard
                del self._shards[name]  # its directory vanished, or was replaced, under it
                self._lost[name] = (shard, self._identity.pop(name))
                self._flushed_at.pop(name, None)
                log.error("edge_collection_lost", collection=name, path=str(path))
            if name in self._lost:
                if identity is None:
                    raise StoreUnavailableError(
                        f"collection {name!r} is lost: its directory {path} vanished "
                        "(removed, moved, replaced or unreadable) while the store held it open"
                    )
                shard, opened_from = self._lost.pop(name)
                log.warning("edge_collection_back", collection=name, path=str(path))
                if identity == opened_from:  # the same directory, back: its handle still holds
                    self._shards[name], self._identity[name] = shard, identity
                    return shard
                # Another directory (a copy restored): loaded below. The old shard is closed with
                # the store, not now: closing one whose files are gone held the GIL for 0.5 s
                # here (Edge captures a backtrace of its failed flush), and its log's lock is on
                # a file no longer there, so it blocks nothing.
                self._retired.append(shard)
            with engine_errors("open", name):
                if identity is not None:
                    # Passing the config makes Edge check the stored shard against it.
                    shard = edge.EdgeShard.load(str(path), config)
                elif config is not None:
                    self._root.mkdir(parents=True, exist_ok=True)
                    shard = edge.EdgeShard.create(str(path), config)
                else:
                    return None
            self._shards[name] = shard
            self._identity[name] = _identity(path) or (0, 0)
            return shard

    def _flush_if_due(self, name: str, shard: edge.EdgeShard) -> None:
        """Flush the shard's segments if the last flush is ``flush_interval_s`` old.

        An update is durable once Edge has it in its write-ahead log (a killed process replays
        the log when the shard is next loaded); a flush writes the segments and lets the log be
        truncated. Flushing after every write, as a first version did, cost 6 ms per indexed
        document, more than parsing and chunking it; like the Qdrant server, whose
        ``flush_interval_sec`` defaults to 5, segments are flushed every few seconds instead.
        """
        now = time.monotonic()
        if now - self._flushed_at.get(name, 0.0) >= self._flush_interval_s:
            self._flushed_at[name] = now
            shard.flush()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the vector store is closed")


def _identity(path: Path) -> tuple[int, int] | None:
    """``path`` as (device, inode) if it holds a shard this process can read, else None."""
    try:
        os.stat(path / _SHARD_MARKER)  # fails on a missing, replaced or unreadable directory
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino
