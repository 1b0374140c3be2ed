"""Distributed indexing: the Celery app, its one task, and the queue the API hands work to.

Delivery guarantees, in Celery's own terms:

- ``task_acks_late``: a task is acknowledged only after it finished, so a worker killed
  mid-document leaves the message to be delivered again (RabbitMQ at once when the connection
  drops; Redis after the visibility timeout). ``shoal worker`` runs a thread pool, so a kill
  takes the whole process and its connection: that alone brings the message back (the kill
  test passes without ``task_reject_on_worker_lost``, which covers a prefork child that dies
  under a living parent; it stays on for anyone who runs these tasks in that pool).
- ``worker_prefetch_multiplier = 1``: a worker holds one message per thread, so a dying worker
  strands almost nothing and priorities (:mod:`workers.fairness`) decide what runs next.
- Transient errors (store or database unavailable) are retried with exponential backoff and
  jitter (:func:`retry_countdown_s`) up to ``max_attempts``; then the document is marked failed
  with the reason. Bad input is never retried: the handler has already marked it failed.

The task is a thin wrapper: the worker binds the handler (``app.services.indexing``) when it
starts, so this module knows nothing of databases or models, and tests call the handler
directly. Messages carry only the document id; the worker re-reads everything else.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Celery, Task
from kombu import Queue

from workers.errors import TransientError
from workers.fairness import LOWEST

log = structlog.get_logger(__name__)

TASK_NAME = "shoal.index_document"
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
_DEPTH_CACHE_S = 2.0

Handler = Callable[[str], None]
GiveUp = Callable[[str, BaseException], None]


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str
    queue: str = "shoal.index"
    max_attempts: int = 5
    visibility_timeout_s: int = 600


def retry_countdown_s(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 1, 2, 4, ... up to a minute, plus up to a
    second of jitter (the in-process runner's shape, tenacity's ``wait_exponential_jitter``).

    Not Celery's full jitter (a random whole number of seconds up to the exponential): that
    retried at once one time in two on the first retry, before a blip had any time to clear.
    """
    jitter = random.uniform(0, BACKOFF_BASE_S)  # noqa: S311 (spreading retries, not a secret)
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**retries + jitter)


def is_amqp(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}


def create_celery(
    config: CeleryConfig, *, handler: Handler | None = None, on_give_up: GiveUp | None = None
) -> Celery:
    """A Celery app for ``config``; a worker passes the ``handler`` its task runs."""
    app = Celery("shoal", broker=config.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=config.queue,
        # RabbitMQ: a priority queue (higher number first). Redis: one list per priority
        # level, lowest number first; ten steps so every fairness level is its own list.
        task_queues=[Queue(config.queue, routing_key=config.queue, max_priority=LOWEST)],
        broker_transport_options={
            "visibility_timeout": config.visibility_timeout_s,
            "priority_steps": list(range(LOWEST + 1)),
            "sep": ":",
            "queue_order_strategy": "priority",
            # Redis: look for messages past the visibility timeout every 10 s (Kombu's
            # interval), not every tenth look (its default throttle): a killed worker's
            # messages come back within 10 s of the timeout, not 100 s.
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    max_retries = config.max_attempts - 1

    @app.task(name=TASK_NAME, bind=True, max_retries=max_retries)
    def index_document(task: Task[Any, Any], document_id: str) -> None:
        if handler is None:
            raise RuntimeError("this Celery app was built without a handler: it only sends")
        try:
            handler(document_id)
        except TransientError as exc:
            retries = task.request.retries
            if retries >= max_retries:
                log.error("indexing_gave_up", document_id=document_id, error=str(exc))
                if on_give_up is not None:
                    on_give_up(document_id, exc)
                return
            raise task.retry(exc=exc, countdown=retry_countdown_s(retries)) from exc
        except Exception as exc:
            log.exception("indexing_task_failed", document_id=document_id)
            if on_give_up is not None:
                on_give_up(document_id, exc)

    return app


class CeleryQueue:
    """A :class:`workers.queue.TaskQueue` that publishes to the broker."""

    def __init__(self, app: Celery, *, queue: str) -> None:
        self._app = app
        self._queue = queue
        self._amqp = is_amqp(str(app.conf.broker_url))
        self._depth_lock = threading.Lock()
        self._depth: tuple[float, int] = (0.0, 0)

    def enqueue(self, document_id: str, *, priority: int = 0) -> None:
        # Fairness counts 0 as the most urgent; AMQP counts the highest number first.
        broker_priority = LOWEST - priority if self._amqp else priority
        self._app.send_task(
            TASK_NAME, args=[document_id], queue=self._queue, priority=broker_priority
        )

    def depth(self) -> int:
        """Messages waiting in the broker (cached for two seconds; -1 if it cannot be asked)."""
        with self._depth_lock:
            at, value = self._depth
            if time.monotonic() - at < _DEPTH_CACHE_S:
                return value
            try:
                with self._app.connection_for_read() as connection:
                    channel: Any = connection.default_channel  # the transport's own channel
                    # Declared exactly as the workers declare it (priorities included), not
                    # passively: on Redis a queue nobody has declared yet, or one whose lists
                    # emptied, is no error but an empty queue.
                    queue = self._app.amqp.queues[self._queue]
                    declared: Any = queue(channel).queue_declare()  # the transport's tuple
                    value = int(declared.message_count)
            except Exception as exc:  # a missing queue or an unreachable broker
                log.warning("queue_depth_unavailable", error=str(exc))
                value = -1
            self._depth = (time.monotonic(), value)
            return value

    def close(self, *, wait: bool = True) -> None:
        self._app.close()
