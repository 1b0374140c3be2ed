"""``/v1/jobs/{job_id}``: an upload's progress (write scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.db.models import DocumentState
from app.gateway.deps import CallerDep, SessionDep
from app.schemas.documents import JobPublic
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
    return JobPublic.of(status)
