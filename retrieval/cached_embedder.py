"""An embedder behind the embedding cache: only the texts the cache misses reach the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import structlog

from retrieval.cache import (
    EmbeddingCache,
    LookupObserver,
    Vector,
    cache_key,
    lookup_quietly,
    normalise_query,
    store_quietly,
)
from retrieval.embedding import ChunkEmbedder

log = structlog.get_logger(__name__)


class CachedEmbedder:
    """An embedder that looks texts up in a cache and encodes only the ones it misses.

    It wraps a :class:`~retrieval.embedding.ChunkEmbedder` and has the same interface, so
    indexing uses it in place of the model: a new version of a document re-embeds only the
    chunks whose text changed. Thread-safe if the wrapped embedder and the cache are.

    Its entries are one tenant's: :meth:`scoped` gives the view that reads and writes them.
    Without a scope (as built) it never reaches the cache and only normalises and encodes, so
    a call path that forgets the tenant costs time, never another tenant's entries.

    Like :func:`embed_query`, it embeds each text's normalised form, because the key hashes
    that form: were the raw text embedded, one key could hold two vectors. For
    all-MiniLM-L6-v2 this changes nothing (its BERT tokenizer splits on whitespace and folds
    accents, so both forms give the same tokens and the same vector); for other models a chunk
    loses only runs of whitespace and Unicode decomposition.
    """

    def __init__(
        self,
        embedder: ChunkEmbedder,
        cache: EmbeddingCache,
        *,
        on_lookup: LookupObserver | None = None,
        scope: str | None = None,
    ) -> None:
        """``on_lookup(hits, misses)`` is called after each lookup, one count per text."""
        self._embedder = embedder
        self._cache = cache
        self._on_lookup = on_lookup
        self._scope = scope

    def scoped(self, scope: str) -> Self:
        """This embedder on behalf of ``scope`` (a tenant id): a view over the same model and
        cache whose entries are ``scope``'s alone."""
        return type(self)(self._embedder, self._cache, on_lookup=self._on_lookup, scope=scope)

    @property
    def scope(self) -> str | None:
        """Whose entries this view reads and writes; None: it never reaches the cache."""
        return self._scope

    @property
    def model_id(self) -> str:
        return self._embedder.model_id

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    @property
    def max_seq_length(self) -> int:
        return self._embedder.max_seq_length

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def encode(self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None) -> Vector:
        """Embed ``texts`` as the wrapped embedder does: one unit-length float32 row per text,
        in input order, shape ``(len(texts), dimension)``.

        All texts are looked up in one batch; the misses are encoded in one call (a text
        repeated within the call once) and stored. A cache failure counts every text as a
        miss and is logged, never raised; so is a cached vector of the wrong length.

        Raises:
            ValueError: ``token_counts`` has not one count per text.
            Whatever the wrapped ``encode`` raises (e.g. ``ValueError`` for a text too long).
        """
        if token_counts is not None and len(token_counts) != len(texts):
            raise ValueError("token_counts must have one count per text")
        dimension = self._embedder.dimension
        rows = np.empty((len(texts), dimension), dtype=np.float32)
        if not texts:
            return rows
        normalised = [normalise_query(text) for text in texts]
        if self._scope is None:
            return self._embedder.encode(
                normalised,
                token_counts=self._recount(texts, normalised, token_counts, range(len(texts))),
            )
        keys = [cache_key(self._scope, self.model_id, text) for text in normalised]
        missed: dict[str, list[int]] = {}  # key -> the rows that need its vector
        corrupt = 0
        for row, (key, vector) in enumerate(
            zip(keys, lookup_quietly(self._cache, keys), strict=True)
        ):
            if vector is not None and vector.shape == (dimension,):
                rows[row] = vector
            else:
                if vector is not None:
                    corrupt += 1
                missed.setdefault(key, []).append(row)
        if corrupt:
            log.warning("embedding_cache_corrupt", count=corrupt, expected=dimension)
        misses = sum(len(indices) for indices in missed.values())
        if self._on_lookup is not None:
            self._on_lookup(len(texts) - misses, misses)
        if not missed:
            return rows

        firsts = [indices[0] for indices in missed.values()]
        counts = self._recount(texts, normalised, token_counts, firsts)
        vectors = self._embedder.encode([normalised[i] for i in firsts], token_counts=counts)
        for indices, vector in zip(missed.values(), vectors, strict=True):
            rows[indices] = vector
        store_quietly(self._cache, dict(zip(missed, vectors, strict=True)))
        return rows

    def _recount(
        self,
        texts: Sequence[str],
        normalised: Sequence[str],
        token_counts: Sequence[int] | None,
        rows: Sequence[int],
    ) -> list[int] | None:
        """The token counts of ``rows``' normalised texts: chunking counted the raw text, so
        only the rows that normalising changed are counted again."""
        if token_counts is None:
            return None
        return [
            token_counts[i]
            if normalised[i] == texts[i]
            else self._embedder.count_tokens(normalised[i])
            for i in rows
        ]
