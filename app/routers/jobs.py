"""``/v1/jobs/{job_id}``: an upload's progress (write scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.db.models import DocumentState
from app.gateway.deps import CallerDep, SessionDep
from app.schemas import JobDocumentPublic, JobPublic
from app.services import jobs
from app.services.keys import WRITE, authorize_tenant_scope

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}")
def get_job(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    state: Annotated[
        DocumentState | None,
        Query(description="List only the documents in this state; counts cover them all."),
    ] = None,
) -> JobPublic:
    status = jobs.get_job(
        session, access=authorize_tenant_scope(caller, WRITE), job_id=job_id, state=state
    )
    return JobPublic(
        id=status.job.id,
        namespace_id=status.job.namespace_id,
        state=status.state,
        counts=status.counts,
        documents=[
            JobDocumentPublic(
                id=doc.id,
                state=doc.state.value,
                reason=doc.reason,
                duplicate=duplicate,
                filename=doc.filename,
            )
            for doc, duplicate in status.documents
        ],
        created_at=status.job.created_at,
    )
