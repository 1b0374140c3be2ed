"""A route's endpoints, and which one takes the next call.

Each call goes to the endpoint with the fewest requests in flight relative to its weight
(weighted least outstanding requests): unlike round robin, a slow or saturated endpoint stops
getting work until it catches up. Counts are per process: across API replicas each balances its
own share, which is what load balancers that use least connections also do.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from retrieval.generation.base import GenerationBackend


@dataclass
class _Endpoint:
    backend: GenerationBackend
    weight: float
    outstanding: int = 0


class EndpointPool:
    """A route's endpoints, picked by weighted least outstanding requests.

    Ties go to the endpoint listed first, so with nothing in flight the first one serves.
    """

    def __init__(self, endpoints: Sequence[tuple[GenerationBackend, float]]) -> None:
        if not endpoints:
            raise ValueError("a route needs at least one endpoint")
        if any(weight <= 0 for _, weight in endpoints):
            raise ValueError("endpoint weights must be positive")
        self._endpoints = [_Endpoint(backend, weight) for backend, weight in endpoints]
        self._lock = threading.Lock()

    def outstanding(self) -> list[int]:
        with self._lock:
            return [e.outstanding for e in self._endpoints]

    @property
    def size(self) -> int:
        return len(self._endpoints)

    @contextmanager
    def acquire(self, skip: Collection[int] = ()) -> Iterator[tuple[int, GenerationBackend]]:
        """The endpoint to call now, and its index; it counts as busy until the block exits.

        ``skip`` holds indices not to pick (endpoints that just failed this request).

        Raises:
            LookupError: every endpoint is skipped.
        """
        with self._lock:
            candidates = [(i, e) for i, e in enumerate(self._endpoints) if i not in skip]
            if not candidates:
                raise LookupError("every endpoint of the route was tried")
            index, chosen = min(candidates, key=lambda c: (c[1].outstanding + 1) / c[1].weight)
            chosen.outstanding += 1
        try:
            yield index, chosen.backend
        finally:
            with self._lock:
                chosen.outstanding -= 1
