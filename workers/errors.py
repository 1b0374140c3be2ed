"""Errors that decide what a task runner does with a failed task.

    TransientError   the store or database may come back: retry with backoff

Anything else a task raises is final: the task has already recorded why on its document.
"""

from __future__ import annotations


class TransientError(Exception):
    """Raised by a task when retrying later may succeed."""
