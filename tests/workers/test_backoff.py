"""The Celery task's retry backoff: doubling from one second, jittered, never immediate."""

from __future__ import annotations

from workers.celery_app import BACKOFF_MAX_S, retry_countdown_s


def test_each_retry_waits_at_least_the_doubled_base_and_at_most_a_second_more() -> None:
    for retries, floor in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]):
        waits = [retry_countdown_s(retries) for _ in range(200)]
        assert all(floor <= w <= floor + 1.0 for w in waits), (retries, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: retries after one outage do not stampede


def test_the_wait_is_capped() -> None:
    assert retry_countdown_s(12) == BACKOFF_MAX_S
