"""Jobs: an upload's progress, derived from its documents' states on every read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Document, DocumentState, Job, JobDocument
from app.errors import NotFoundError


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    counts: dict[str, int]
    documents: list[tuple[Document, bool]]


def job_state(states: list[DocumentState]) -> str:
    """``queued`` until a document starts, ``running`` while any is pending, then
    ``succeeded`` (all indexed), ``failed`` (all failed) or ``partial``."""
    counts = Counter(states)
    pending = counts[DocumentState.QUEUED] + counts[DocumentState.PARSING]
    pending += counts[DocumentState.EMBEDDING]
    if pending:
        return "queued" if counts[DocumentState.QUEUED] == len(states) else "running"
    if counts[DocumentState.FAILED] == 0:
        return "succeeded"
    return "failed" if counts[DocumentState.INDEXED] == 0 else "partial"


def get_job(session: Session, *, tenant_id: str, job_id: str) -> JobStatus:
    """The job's state, per-state counts and documents in upload order.

    Raises:
        NotFoundError: no such job for this tenant (another tenant's job included).
    """
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFoundError("job", job_id)
    rows = session.execute(
        select(Document, JobDocument.duplicate)
        .join(JobDocument, JobDocument.document_id == Document.id)
        .where(JobDocument.job_id == job_id)
        .order_by(JobDocument.position)
    ).all()
    documents = [(doc, bool(dup)) for doc, dup in rows]
    states = [doc.state for doc, _ in documents]
    counts = {state.value: 0 for state in DocumentState}
    counts.update({state.value: n for state, n in Counter(states).items()})
    return JobStatus(job=job, state=job_state(states), counts=counts, documents=documents)
