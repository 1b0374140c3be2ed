"""Fair scheduling across tenants: a document's priority falls as its tenant's backlog grows.

Both runners take work highest priority first (0 is the highest), first in first out within a
priority. A document's priority is the bit length of its position in its tenant's backlog when
it was enqueued: a tenant's first document gets 0, the next 1, the next two 2, the next four 3,
and so on up to :data:`LOWEST`. So a 5-document upload from a quiet tenant (priorities 0 to 3) is
served before the tail of another tenant's 10,000-document batch (priority 9), while the big
batch still uses every idle worker: no tenant waits for a quiet tenant's slot, and no tenant's
backlog keeps another waiting.

Why priorities and not a queue per tenant: both Celery brokers support priorities on one queue
(RabbitMQ ``x-max-priority``, Redis priority steps), whereas per-tenant queues would need
workers to subscribe to queues created at run time.
"""

from __future__ import annotations

HIGHEST = 0
LOWEST = 9
LEVELS = LOWEST - HIGHEST + 1


def priority_for(backlog_position: int) -> int:
    """The priority of a tenant's document with ``backlog_position`` documents ahead of it."""
    if backlog_position < 0:
        raise ValueError("backlog_position must be >= 0")
    return min(LOWEST, backlog_position.bit_length())
