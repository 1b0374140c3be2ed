"""Search within one tenant's namespace."""

from __future__ import annotations

import dataclasses

from retrieval.stores.base import Hit, SearchRequest, VectorStore

MAX_LIMIT = 300


def search(
    store: VectorStore,
    collection: str,
    request: SearchRequest,
    *,
    tenant_id: str,
    namespace_id: str,
) -> list[Hit]:
    """The best ``request.limit`` chunks of a namespace for ``request``, best first.

    Always adds ``tenant_id`` and ``namespace_id`` to the request's conditions, although the
    collection already belongs to one namespace: defence in depth, so a reused or mistyped
    collection name can never return another tenant's chunks.

    Raises:
        ValueError: ``request.limit`` is outside 1..100.
        StoreUnavailableError: the vector store failed.
    """
    if not 1 <= request.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {request.limit}")
    where = {**request.where, "tenant_id": tenant_id, "namespace_id": namespace_id}
    return store.search(collection, dataclasses.replace(request, where=where))
