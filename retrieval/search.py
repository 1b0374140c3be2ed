"""Vector search within one tenant's namespace."""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.stores.base import Hit, VectorStore, Where

MAX_LIMIT = 100


def search(
    store: VectorStore,
    collection: str,
    vector: Sequence[float],
    *,
    tenant_id: str,
    namespace_id: str,
    limit: int,
) -> list[Hit]:
    """The ``limit`` chunks nearest to ``vector`` in a namespace, best first.

    Always filters on ``tenant_id`` and ``namespace_id``, although the collection already
    belongs to one namespace: defence in depth, so a reused or mistyped collection name can
    never return another tenant's chunks.

    Raises:
        ValueError: ``limit`` is outside 1..100.
        StoreUnavailableError: the vector store failed.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    where: Where = {"tenant_id": tenant_id, "namespace_id": namespace_id}
    return store.search(collection, vector, where=where, limit=limit)
