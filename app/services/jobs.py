"""Jobs: an upload's progress, derived from its documents' states on every read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Document, DocumentState, Job, JobDocument, Namespace
from app.errors import NotFoundError
from app.services.keys import TenantAccess


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    counts: dict[str, int]
    documents: list[tuple[Document, bool]]


def job_state(counts: Mapping[DocumentState, int]) -> str:
    """From its documents' per-state counts: ``queued`` until a document starts, ``running``
    while any is pending, then ``succeeded`` (all indexed), ``failed`` (all failed) or
    ``partial``. Documents removed since (replaced by a newer version, or deleted) no longer
    count: a job whose documents were all replaced has succeeded, with ``removed`` saying so."""
    counts = Counter(counts)
    total = sum(counts.values())
    pending = counts[DocumentState.QUEUED] + counts[DocumentState.PARSING]
    pending += counts[DocumentState.EMBEDDING]
    if pending:
        return "queued" if counts[DocumentState.QUEUED] == total else "running"
    if counts[DocumentState.FAILED] == 0:
        return "succeeded"
    return "failed" if counts[DocumentState.INDEXED] == 0 else "partial"


def get_job(
    session: Session, *, access: TenantAccess, job_id: str, state: DocumentState | None = None
) -> JobStatus:
    """The job's state, per-state counts and documents in upload order.

    ``state`` narrows the document list (not the counts) to documents in that state: a client
    following a batch of thousands asks for ``failed`` ones only.

    Raises:
        NotFoundError: no such job for this tenant (another tenant's job included), or one in a
            namespace the key is not limited to.
    """
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != access.tenant_id or not _reachable(session, access, job):
        raise NotFoundError("job", job_id)
    in_job = (
        select(Document.state, func.count())
        .join(JobDocument, JobDocument.document_id == Document.id)
        .where(JobDocument.job_id == job_id)
        .group_by(Document.state)
    )
    counted = {DocumentState(s): n for s, n in session.execute(in_job)}
    listed = (
        select(Document, JobDocument.duplicate)
        .join(JobDocument, JobDocument.document_id == Document.id)
        .where(JobDocument.job_id == job_id)
        .order_by(JobDocument.position)
    )
    if state is not None:
        listed = listed.where(Document.state == state)
    documents = [(doc, bool(dup)) for doc, dup in session.execute(listed)]
    counts = {s.value: counted.get(s, 0) for s in DocumentState}
    present = sum(counted.values())
    counts["removed"] = max(0, (job.document_count or present) - present)
    return JobStatus(job=job, state=job_state(counted), counts=counts, documents=documents)


def _reachable(session: Session, access: TenantAccess, job: Job) -> bool:
    """Whether the job's namespace is one ``access`` may use (a job lives as long as its
    namespace: deleting one deletes the other)."""
    if access.namespaces is None:
        return True
    name = session.scalar(select(Namespace.name).where(Namespace.id == job.namespace_id))
    return name is not None and access.allows(name)
