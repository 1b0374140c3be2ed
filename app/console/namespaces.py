"""Tenant admin pages: namespaces, their documents (list, filter, upload, delete) and jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from app.console.web import (
    ConsoleDep,
    ConsoleRoute,
    FormDep,
    error_status,
    form_error,
    is_htmx,
    render,
    see_other,
)
from app.db.models import DocumentState, Namespace
from app.errors import ConflictError, InvalidRequestError, ShoalError
from app.gateway.deps import PlatformDep, SessionDep
from app.schemas.namespaces import NamespaceCreate
from app.services import documents, jobs, namespaces
from app.services.keys import ADMIN, WRITE, TenantAccess, authorize_tenant_scope
from app.services.uploads import UploadItem
from ingestion.errors import IngestionError
from retrieval.errors import StoreError

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
STATES = [state.value for state in DocumentState]


@router.get("/namespaces")
def namespace_list(request: Request, console: ConsoleDep, db: SessionDep) -> Response:
    rows = namespaces.list_namespaces(db, access=authorize_tenant_scope(console.caller, ADMIN))
    return render(request, "namespaces.html", namespaces=rows, form={})


@router.post("/namespaces")
def namespace_create(
    request: Request,
    console: FormDep,
    db: SessionDep,
    platform: PlatformDep,
    name: Annotated[str, Form()] = "",
    indexed_fields: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
) -> Response:
    """Create a namespace (the API's rules: ``NamespaceCreate``, then the service's)."""
    access = authorize_tenant_scope(console.caller, ADMIN)
    form = {"name": name, "indexed_fields": indexed_fields, "mode": mode}
    try:
        body = NamespaceCreate.model_validate(
            {
                "name": name.strip(),
                "indexed_fields": _parse_fields(indexed_fields),
                "search": {"mode": mode} if mode else {},
            }
        )
        namespaces.create_namespace(
            db,
            tenant_id=access.tenant_id,
            name=body.name,
            embedding_model=platform.embedder.model_id,
            embedding_dimension=platform.embedder.dimension,
            indexed_fields=dict(body.indexed_fields),
            routes={},
            search=body.search.model_dump(exclude_none=True),
            store=platform.store,
        )
    except (ValidationError, InvalidRequestError, ConflictError, StoreError) as exc:
        status, error = (
            (422, form_error(exc)) if isinstance(exc, ValidationError) else error_status(exc)
        )
        rows = namespaces.list_namespaces(db, access=access)
        return render(
            request, "namespaces.html", status_code=status, namespaces=rows, form=form, error=error
        )
    return see_other(f"/console/namespaces/{body.name}")


def _parse_fields(text: str) -> dict[str, str]:
    """``name: type`` per line (or comma) into the API's ``indexed_fields`` object."""
    fields: dict[str, str] = {}
    for entry in text.replace(",", "\n").splitlines():
        if not entry.strip():
            continue
        name, sep, kind = entry.partition(":")
        if not sep:
            raise InvalidRequestError(
                f"indexed field {entry.strip()!r}: write it as name: type", field="indexed_fields"
            )
        fields[name.strip()] = kind.strip()
    return fields


@router.get("/namespaces/{name}")
def namespace_page(
    request: Request,
    name: str,
    console: ConsoleDep,
    db: SessionDep,
    state: Annotated[str, Query()] = "",
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Response:
    """The namespace's documents by filename, with states and failure reasons."""
    access = authorize_tenant_scope(console.caller, ADMIN)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    wanted = DocumentState(state) if state in STATES else None
    rows, total = documents.list_documents(
        db, namespace=namespace, limit=PAGE_SIZE, offset=offset, state=wanted
    )
    return render(
        request,
        "namespace.html",
        namespace=namespace,
        documents=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        state=wanted.value if wanted else "",
        states=STATES,
    )


@router.post("/namespaces/{name}/documents")
async def upload(
    request: Request, name: str, console: FormDep, db: SessionDep, platform: PlatformDep
) -> Response:
    """Upload the form's files as one job, then follow the job's progress."""
    access = authorize_tenant_scope(console.caller, WRITE)
    namespace = await run_in_threadpool(
        namespaces.get_namespace,
        db,
        access=access,
        name=name,
        embedded_by=platform.embedder.model_id,
    )
    await run_in_threadpool(db.commit)  # no read transaction while the files are read
    form = await request.form()
    items = []
    for part in form.getlist("files"):
        if isinstance(part, UploadFile) and part.filename:
            items.append(
                UploadItem(
                    data=await part.read(),
                    filename=part.filename,
                    declared_type=part.content_type,
                )
            )
    if not items:
        return await _upload_refused(request, db, name, access, "Choose at least one file.")
    try:
        result = await run_in_threadpool(
            documents.upload,
            db,
            namespace=namespace,
            items=items,
            enqueue=platform.enqueue,
            ingestion=platform.settings.ingestion,
        )
    except (ShoalError, IngestionError) as exc:  # an unsupported or unparsable file
        status, error = error_status(exc)
        return await _upload_refused(request, db, name, access, error, status_code=status)
    return see_other(f"/console/jobs/{result.job.id}")


async def _upload_refused(
    request: Request,
    db: Session,
    name: str,
    access: TenantAccess,
    error: str,
    *,
    status_code: int = 422,
) -> Response:
    def page() -> Response:
        namespace = namespaces.get_namespace(db, access=access, name=name)
        rows, total = documents.list_documents(db, namespace=namespace, limit=PAGE_SIZE, offset=0)
        return render(
            request,
            "namespace.html",
            status_code=status_code,
            namespace=namespace,
            documents=rows,
            total=total,
            offset=0,
            page_size=PAGE_SIZE,
            state="",
            states=STATES,
            error=error,
        )

    return await run_in_threadpool(page)


@router.post("/namespaces/{name}/documents/{document_id}/delete")
def document_delete(
    name: str, document_id: str, console: FormDep, db: SessionDep, platform: PlatformDep
) -> Response:
    access = authorize_tenant_scope(console.caller, WRITE)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    documents.delete_document(
        db,
        namespace=namespace,
        document_id=document_id,
        store=platform.store,
        answers=platform.query.answers,
    )
    return see_other(f"/console/namespaces/{name}")


@router.get("/namespaces/{name}/delete")
def namespace_delete_page(
    request: Request, name: str, console: ConsoleDep, db: SessionDep
) -> Response:
    """Ask for the namespace's name before deleting it with all its documents."""
    access = authorize_tenant_scope(console.caller, ADMIN)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    return render(request, "namespace_delete.html", namespace=namespace)


@router.post("/namespaces/{name}/delete")
def namespace_delete(
    request: Request,
    name: str,
    console: FormDep,
    db: SessionDep,
    platform: PlatformDep,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    access = authorize_tenant_scope(console.caller, ADMIN)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    if confirm.strip() != namespace.name:
        error = "Type the namespace's name exactly to delete it."
        return render(
            request, "namespace_delete.html", status_code=422, namespace=namespace, error=error
        )
    namespaces.delete_namespace(db, access=access, name=name, store=platform.store)
    return see_other("/console/namespaces")


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, console: ConsoleDep, db: SessionDep) -> Response:
    """An upload's progress; the progress panel reloads itself (htmx) until the job ends."""
    access = authorize_tenant_scope(console.caller, WRITE)
    status = jobs.get_job(db, access=access, job_id=job_id)
    template = "_job_progress.html" if is_htmx(request) else "job.html"
    # The job is the tenant's (get_job checked), so its namespace is too.
    namespace = db.get(Namespace, status.job.namespace_id)
    return render(request, template, status=status, namespace=namespace)
