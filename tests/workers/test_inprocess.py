"""The embedded runner: bounded, retries transient failures, gives up with a reason."""

from __future__ import annotations

import threading

from workers.errors import TransientError
from workers.inprocess import InProcessQueue


def test_tasks_run_off_the_caller_thread_and_depth_drains_to_zero() -> None:
    seen: list[tuple[str, str]] = []
    release = threading.Event()

    def handler(document_id: str) -> None:
        release.wait(5)
        seen.append((document_id, threading.current_thread().name))

    queue = InProcessQueue(handler, concurrency=1)
    queue.enqueue("a")
    queue.enqueue("b")
    assert queue.depth() == 2
    release.set()
    assert queue.join(timeout_s=5)
    queue.close()
    assert [d for d, _ in seen] == ["a", "b"]
    assert all(name.startswith("shoal-index") for _, name in seen)
    assert queue.depth() == 0


def test_a_document_already_queued_is_not_queued_twice() -> None:
    calls: list[str] = []
    gate = threading.Event()

    def handler(document_id: str) -> None:
        gate.wait(5)
        calls.append(document_id)

    queue = InProcessQueue(handler, concurrency=1)
    queue.enqueue("blocker")
    queue.enqueue("x")
    queue.enqueue("x")
    gate.set()
    queue.join(timeout_s=5)
    queue.close()
    assert calls == ["blocker", "x"]


def test_transient_errors_are_retried_until_they_pass() -> None:
    attempts: list[int] = []

    def flaky(_: str) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("store down")

    gave_up: list[str] = []
    queue = InProcessQueue(
        flaky, concurrency=1, on_give_up=lambda d, e: gave_up.append(d), backoff_initial_s=0.01
    )
    queue.enqueue("doc")
    queue.join(timeout_s=5)
    queue.close()
    assert len(attempts) == 3
    assert gave_up == []


def test_after_the_last_attempt_the_runner_gives_up_and_says_why() -> None:
    gave_up: list[tuple[str, str]] = []

    def always_down(_: str) -> None:
        raise TransientError("store down")

    queue = InProcessQueue(
        always_down,
        concurrency=1,
        max_attempts=2,
        backoff_initial_s=0.01,
        on_give_up=lambda d, e: gave_up.append((d, str(e))),
    )
    queue.enqueue("doc")
    queue.join(timeout_s=5)
    queue.close()
    assert gave_up == [("doc", "store down")]


def test_a_bug_in_the_handler_is_not_retried_and_is_reported() -> None:
    attempts: list[int] = []
    gave_up: list[str] = []

    def buggy(_: str) -> None:
        attempts.append(1)
        raise KeyError("oops")

    queue = InProcessQueue(buggy, concurrency=1, on_give_up=lambda d, e: gave_up.append(d))
    queue.enqueue("doc")
    queue.join(timeout_s=5)
    queue.close()
    assert attempts == [1]
    assert gave_up == ["doc"]


def test_close_drops_tasks_not_started_and_finishes_the_running_one() -> None:
    started = threading.Event()
    release = threading.Event()
    done: list[str] = []

    def handler(document_id: str) -> None:
        started.set()
        release.wait(5)
        done.append(document_id)

    queue = InProcessQueue(handler, concurrency=1)
    for document_id in ("running", "waiting-1", "waiting-2"):
        queue.enqueue(document_id)
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    queue.close(wait=True)
    assert done == ["running"]


def test_higher_priority_work_is_taken_first_and_ties_keep_arrival_order() -> None:
    gate = threading.Event()
    order: list[str] = []

    def handler(document_id: str) -> None:
        gate.wait(5)
        order.append(document_id)

    queue = InProcessQueue(handler, concurrency=1)
    queue.enqueue("running", priority=0)
    for i in range(3):
        queue.enqueue(f"big-{i}", priority=9)
    queue.enqueue("small-0", priority=0)
    queue.enqueue("small-1", priority=1)
    gate.set()
    assert queue.join(timeout_s=5)
    queue.close()
    assert order == ["running", "small-0", "small-1", "big-0", "big-1", "big-2"]
