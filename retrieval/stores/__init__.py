"""Vector stores: the :class:`VectorStore` Protocol, its two engines, and the one factory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.config import VectorStoreConfig
from retrieval.stores.base import CollectionSpec, Hit, Point, VectorStore
from retrieval.stores.edge import EdgeStore

if TYPE_CHECKING:
    from retrieval.stores.server import ServerStore

__all__ = [
    "CollectionSpec",
    "EdgeStore",
    "Hit",
    "Point",
    "ServerStore",
    "VectorStore",
    "embedded_root",
    "make_store",
]


def __getattr__(name: str) -> object:
    # qdrant-client takes ~1.5 s to import, and importing anything under retrieval.stores runs
    # this module: embedded deployments, which never need it, do not pay for it.
    if name == "ServerStore":
        from retrieval.stores.server import ServerStore

        return ServerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_store(config: VectorStoreConfig, *, data_dir: Path) -> VectorStore:
    """The vector store ``config`` asks for: the one place that picks an engine.

    With ``config.url`` set, a :class:`ServerStore` on that Qdrant server; otherwise an embedded
    :class:`EdgeStore` under :func:`embedded_root`. Nothing is contacted or opened here; call
    :meth:`VectorStore.ping` to check readiness.
    """
    if config.url is None:
        return EdgeStore(embedded_root(data_dir))
    from qdrant_client import QdrantClient

    from retrieval.stores.server import ServerStore

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


def embedded_root(data_dir: Path) -> Path:
    """Where the embedded store keeps its shards: one directory per collection under it."""
    return data_dir / "qdrant"
