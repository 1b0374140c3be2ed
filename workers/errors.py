"""Errors that decide what a task runner does with a failed task.

    TransientError   the dependency may come back (store or database unavailable): retry with backoff

Anything else a task raises is final: the task has already recorded why on its document.
"""

from __future__ import annotations


class TransientError(Exception):
    """Raised by a task when retrying later may succeed."""
