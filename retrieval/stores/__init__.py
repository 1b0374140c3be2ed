"""Vector stores: the :class:`VectorStore` Protocol, its two engines, and the one factory."""

from __future__ import annotations

import math
from pathlib import Path

from qdrant_client import QdrantClient

from retrieval.config import VectorStoreConfig
from retrieval.stores.base import CollectionSpec, Hit, Point, VectorStore
from retrieval.stores.edge import EdgeStore
from retrieval.stores.server import ServerStore

__all__ = [
    "CollectionSpec",
    "EdgeStore",
    "Hit",
    "Point",
    "ServerStore",
    "VectorStore",
    "make_store",
]


def make_store(config: VectorStoreConfig, *, data_dir: Path) -> VectorStore:
    """The vector store ``config`` asks for: the one place that picks an engine.

    With ``config.url`` set, a :class:`ServerStore` on that Qdrant server; otherwise an embedded
    :class:`EdgeStore` under ``data_dir / "qdrant"``. Nothing is contacted or opened here; call
    :meth:`VectorStore.ping` to check readiness.
    """
    if config.url is None:
        return EdgeStore(data_dir / "qdrant")
    client = QdrantClient(
        url=config.url,
        api_key=config.api_key.get_secret_value() if config.api_key else None,
        # qdrant-client takes whole seconds and rounds up itself; do it here so mypy agrees.
        timeout=math.ceil(config.timeout_s),
        # The version check is a blocking request at construction that only warns on failure;
        # start-up stays I/O-free and readiness is ping()'s job.
        check_compatibility=False,
    )
    return ServerStore(client)
