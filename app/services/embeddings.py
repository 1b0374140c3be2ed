"""Embedding a client's texts with a namespace's embedding model (the OpenAI door's
``/embeddings``): the vectors its questions are searched with, for clients that bring their own
store or reranker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from app.errors import InvalidRequestError
from app.metrics import count_cache_lookups
from app.services.keys import TenantAccess
from app.services.limits import Quotas
from app.services.namespaces import get_namespace
from app.services.questions import QueryDeps
from retrieval.cache import normalise_query
from retrieval.cached_embedder import CachedEmbedder

_count_lookups = count_cache_lookups("embeddings")


@dataclass(frozen=True)
class Embedded:
    """One unit-length float32 row per text, in input order, and each text's token count."""

    vectors: npt.NDArray[np.float32]
    token_counts: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


def embed_texts(
    session: Session,
    *,
    access: TenantAccess,
    key_id: str,
    namespace_name: str,
    texts: Sequence[str],
    deps: QueryDeps,
    quotas: Quotas | None = None,
) -> Embedded:
    """Embed ``texts`` as the namespace's questions are embedded: the same model, the same
    normalised text (:func:`retrieval.cache.normalise_query`), the same tenant-scoped cache, so a
    text's vector is the one ``/search`` would search with.

    Each text's tokens are counted with the model's tokenizer, special tokens included (what the
    model reads). Their sum is reserved against the caller's token budgets before the model runs
    (the count is exact, so nothing is left to settle) and recorded in the usage as prompt tokens.

    Raises:
        NotFoundError: no such namespace for this tenant, or one ``access`` may not use.
        EmbeddingModelMismatchError: the namespace was indexed by another model or runtime.
        InvalidRequestError: a text has more tokens than the model reads (never truncated);
            ``field`` is ``input`` or ``input[i]``.
        RateLimitedError: the tokens do not fit the caller's token budgets.
        EmbeddingUnavailableError: the embedding model failed.
    """
    tenant_id = access.tenant_id
    # Another model's (or runtime's) vectors would not be the ones its questions search with.
    get_namespace(session, access=access, name=namespace_name, embedded_by=deps.embedder.model_id)
    # End the lookup's transaction before the model works (SQLite's write lock, as in queries).
    session.commit()
    embedder = deps.embedder
    counts = [embedder.count_tokens(normalise_query(text)) for text in texts]
    for index, count in enumerate(counts):
        if count > embedder.max_seq_length:
            where = "input" if len(texts) == 1 else f"input[{index}]"
            raise InvalidRequestError(
                f"{where} has {count} tokens; {embedder.model_id} reads at most "
                f"{embedder.max_seq_length}: split it",
                field=where,
            )
    tokens = sum(counts)
    reservation = None
    if deps.limits is not None and quotas is not None:
        reservation, _ = deps.limits.reserve(quotas, tokens)
    try:
        cached = CachedEmbedder(embedder, deps.cache, on_lookup=_count_lookups)
        vectors = cached.scoped(tenant_id).encode(texts, token_counts=counts)
    except BaseException:
        if deps.limits is not None:
            deps.limits.settle(reservation, 0)  # nothing was embedded
        raise
    if deps.usage is not None:
        deps.usage.add(tenant_id=tenant_id, key_id=key_id, prompt_tokens=tokens)
    return Embedded(vectors, counts)
