"""Fault drills: faults injected into the real adapters on an operator's request.

With ``SHOAL_ENABLE_FAULTS=true`` the platform wraps its vector store, embedding model, LLM
generation backends, caches and task queue (:mod:`app.guards.drills`); each wrapper
consults a :class:`FaultRegistry` before every call. A fault names a target, a mode (``error``:
the call fails as the real dependency would; ``delay``: it waits ``delay_ms`` first, then goes
on) and optionally a TTL. One fault per target: a new one replaces the previous.

The registry is in-process (:class:`MemoryFaults`), or in Redis when ``SHOAL_REDIS_URL`` is set
(:class:`RedisFaults`) so that every replica and worker sees a drill; each process reads it at
most every :data:`REFRESH_S`, so a fault reaches the other processes within that time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, Protocol, TypeVar, get_args

import redis
import structlog

from app.errors import ShoalError
from retrieval.config import CacheConfig
from retrieval.redis_client import fail_fast_redis

log = structlog.get_logger(__name__)

Target = Literal["vector_store", "embedder", "generator", "cache", "broker"]
TARGETS: tuple[Target, ...] = get_args(Target)
Mode = Literal["error", "delay"]

# How often a process re-reads a Redis registry (a fault reaches other replicas within this).
REFRESH_S = 0.5
REDIS_KEY = "shoal:faults"
_T = TypeVar("_T")


class FaultRegistryUnavailableError(ShoalError):
    """Raised when the shared fault registry (Redis) cannot be read or changed (503)."""


@dataclass(frozen=True)
class Fault:
    """One injected fault. ``expires_at`` is Unix time (replicas share it), None: until cleared.

    ``delay_ms`` is how long each call waits first; in ``error`` mode the call then fails.
    """

    target: Target
    mode: Mode
    delay_ms: int = 0
    expires_at: float | None = None

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    @classmethod
    def from_json(cls, data: str | bytes) -> Fault | None:
        """The fault ``data`` holds, or None if it holds none (a foreign or corrupt entry)."""
        try:
            raw = json.loads(data)
            fault = cls(
                target=raw["target"],
                mode=raw["mode"],
                delay_ms=int(raw["delay_ms"]),
                expires_at=None if raw["expires_at"] is None else float(raw["expires_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return fault if fault.target in TARGETS and fault.mode in get_args(Mode) else None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def new_fault(
    target: Target, mode: Mode, *, delay_ms: int | None = None, ttl_s: float | None = None
) -> Fault:
    """A fault starting now and lasting ``ttl_s`` seconds (None: until cleared)."""
    expires_at = None if ttl_s is None else time.time() + ttl_s
    return Fault(target=target, mode=mode, delay_ms=delay_ms or 0, expires_at=expires_at)


class FaultRegistry(Protocol):
    """The active faults. :meth:`find` is on every call of a wrapped adapter: it must be cheap."""

    def add(self, fault: Fault) -> None:
        """Activate ``fault``, replacing any fault of its target."""
        ...

    def clear(self) -> None:
        """Remove every fault."""
        ...

    def active(self) -> list[Fault]:
        """The faults in force now, by target."""
        ...

    def find(self, target: Target) -> Fault | None:
        """The fault in force for ``target``, if any; never raises."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def strike(registry: FaultRegistry, target: Target, error: Callable[[], Exception]) -> None:
    """Apply ``target``'s fault to the call about to be made: wait its delay, then raise
    ``error()`` in ``error`` mode. Does nothing when no fault is in force."""
    fault = registry.find(target)
    if fault is None:
        return
    if fault.delay_ms:
        time.sleep(fault.delay_ms / 1000)
    if fault.mode == "error":
        raise error()


class MemoryFaults:
    """Faults of this process only (embedded mode, or no Redis)."""

    def __init__(self) -> None:
        self._faults: dict[Target, Fault] = {}
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults[fault.target] = fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        now = time.time()
        with self._lock:
            return sorted((f for f in self._faults.values() if f.live(now)), key=_order)

    def find(self, target: Target) -> Fault | None:
        fault = self._faults.get(target)  # one dict read: atomic, no lock on the hot path
        return fault if fault is not None and fault.live(time.time()) else None

    def close(self) -> None:
        pass


class RedisFaults:
    """Faults shared through one Redis hash (target → fault JSON), read at most every
    :data:`REFRESH_S` by :meth:`find`.

    While Redis is down :meth:`find` sees no fault (a drill must not outlive its registry) and
    tries again after ``cooldown_s``; :meth:`add`, :meth:`clear` and :meth:`active` raise
    :class:`FaultRegistryUnavailableError`.
    """

    def __init__(self, url: str, cache: CacheConfig, *, key: str = REDIS_KEY) -> None:
        self._client = fail_fast_redis(
            url, connect_timeout_s=cache.redis_connect_timeout_s, timeout_s=cache.redis_timeout_s
        )
        self._key = key
        self._cooldown_s = cache.cooldown_s
        self._snapshot: dict[Target, Fault] = {}
        self._refresh_at = float("-inf")
        self._refresh_lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        self._call(lambda: self._client.hset(self._key, fault.target, fault.to_json()))
        self._refresh_at = float("-inf")  # this process sees it at once

    def clear(self) -> None:
        self._call(lambda: self._client.delete(self._key))
        self._refresh_at = float("-inf")

    def active(self) -> list[Fault]:
        now = time.time()
        return sorted((f for f in self._load().values() if f.live(now)), key=_order)

    def find(self, target: Target) -> Fault | None:
        if time.monotonic() >= self._refresh_at and self._refresh_lock.acquire(blocking=False):
            try:
                self._snapshot = self._load()
                self._refresh_at = time.monotonic() + REFRESH_S
            except FaultRegistryUnavailableError as exc:
                log.warning("fault_registry_unavailable", error=str(exc))
                self._snapshot = {}
                self._refresh_at = time.monotonic() + self._cooldown_s
            finally:
                self._refresh_lock.release()
        fault = self._snapshot.get(target)
        return fault if fault is not None and fault.live(time.time()) else None

    def close(self) -> None:
        self._client.close()

    def _load(self) -> dict[Target, Fault]:
        raw = self._call(lambda: self._client.hgetall(self._key))
        faults: dict[Target, Fault] = {}
        for value in raw.values():
            fault = Fault.from_json(value)
            if fault is not None:
                faults[fault.target] = fault
        return faults

    def _call(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except (redis.RedisError, OSError) as exc:
            raise FaultRegistryUnavailableError(
                f"the fault registry (Redis) is unavailable: {type(exc).__name__}: {exc}"
            ) from exc


def _order(fault: Fault) -> int:
    return TARGETS.index(fault.target)


def make_fault_registry(redis_url: str | None, cache: CacheConfig) -> FaultRegistry:
    """Redis when ``redis_url`` is set (every replica sees a drill), else in-process."""
    if redis_url:
        return RedisFaults(redis_url, cache)
    return MemoryFaults()
