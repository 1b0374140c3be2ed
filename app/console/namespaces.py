"""Tenant admin pages: namespaces, their documents (list, filter, upload, delete) and jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
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
from app.platform import Platform
from app.schemas.namespaces import NamespaceCreate
from app.services import documents, jobs, namespaces
from app.services.keys import ADMIN, WRITE, TenantAccess, authorize_tenant_scope
from app.services.uploads import UploadItem
from ingestion.errors import IngestionError
from retrieval.errors import InvalidQueryError, StoreError
from retrieval.generation.catalog import check_routes

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
STATES = [state.value for state in DocumentState]


@dataclass(frozen=True)
class Setting:
    """A numeric field of the namespace form: ``name`` in ``group`` of ``NamespaceCreate``."""

    group: str  # "search" or "policy" (the routes' policy)
    name: str
    label: str
    low: float
    high: float
    step: str = "1"


# NamespaceCreate's numeric settings (its bounds: app.schemas.SearchSettings and
# retrieval.config.RoutingPolicyConfig); the selects (mode, fusion, rerank, routes) are in the
# template. Empty fields are left out: the server's defaults apply.
SETTINGS = (
    Setting("search", "candidates", "Candidates per signal (hybrid)", 10, 1000),
    Setting("search", "rrf_k", "RRF k", 1, 1000),
    Setting("search", "dense_weight", "Dense weight (rrf)", 0, 10, "0.1"),
    Setting("search", "lexical_weight", "BM25 weight (rrf)", 0, 10, "0.1"),
    Setting("search", "min_score", "Minimum score to answer (-1 to 1)", -1, 1, "0.01"),
    Setting("search", "evidence_threshold", "Evidence threshold (0 to 1)", 0, 1, "0.01"),
    Setting("policy", "long_question_tokens", "Long question, in tokens (to large)", 1, 10**6),
    Setting("policy", "large_context_tokens", "Large context, in tokens (to large)", 1, 10**7),
    Setting("policy", "ambiguous_margin", "Ambiguous margin (to large)", 0, 1, "0.01"),
)
CHOICES = {"fusion": ("dbsf", "rrf"), "rerank": ("true", "false")}


async def namespace_form(request: Request) -> dict[str, str]:
    """The namespace form's text fields, by name (it has more than a signature should list)."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


NamespaceForm = Annotated[dict[str, str], Depends(namespace_form)]


@router.get("/namespaces")
def namespace_list(
    request: Request, console: ConsoleDep, db: SessionDep, platform: PlatformDep
) -> Response:
    rows = namespaces.list_namespaces(db, access=authorize_tenant_scope(console.caller, ADMIN))
    return _list(request, platform, rows, form={})


@router.post("/namespaces")
def namespace_create(
    request: Request, console: FormDep, db: SessionDep, platform: PlatformDep, form: NamespaceForm
) -> Response:
    """Create a namespace (the API's rules: ``NamespaceCreate``, the routes checked against
    the operator's catalog, then the service's)."""
    access = authorize_tenant_scope(console.caller, ADMIN)
    try:
        body = NamespaceCreate.model_validate(_namespace_body(form))
        routes: dict[str, Any] = {}
        if body.routes is not None:
            check_routes(body.routes, platform.query.catalog.generators)
            routes = body.routes.model_dump(mode="json", exclude_defaults=True)
        namespaces.create_namespace(
            db,
            tenant_id=access.tenant_id,
            name=body.name,
            embedding_model=platform.embedder.model_id,
            embedding_dimension=platform.embedder.dimension,
            indexed_fields=dict(body.indexed_fields),
            routes=routes,
            search=body.search.model_dump(exclude_none=True),
            store=platform.store,
        )
    # RoutesError (an InvalidQueryError): a route naming a generator the catalog lacks.
    except (
        ValidationError,
        InvalidRequestError,
        InvalidQueryError,
        ConflictError,
        StoreError,
    ) as exc:
        status, error = (
            (422, form_error(exc)) if isinstance(exc, ValidationError) else error_status(exc)
        )
        rows = namespaces.list_namespaces(db, access=access)
        return _list(request, platform, rows, form=form, error=error, status_code=status)
    return see_other(f"/console/namespaces/{body.name}")


def _namespace_body(form: dict[str, str]) -> dict[str, Any]:
    """``NamespaceCreate``'s JSON from the form; empty fields left out (the defaults apply).

    Raises:
        InvalidRequestError: an indexed field is not ``name: type``.
    """
    given = {name: value.strip() for name, value in form.items() if value.strip()}
    search = {s.name: given[s.name] for s in SETTINGS if s.group == "search" and s.name in given}
    search |= {name: given[name] for name in ("mode", *CHOICES) if name in given}
    policy = {s.name: given[s.name] for s in SETTINGS if s.group == "policy" and s.name in given}
    if "analytical_to_large" in given:
        policy["analytical_to_large"] = given["analytical_to_large"]
    routes: dict[str, Any] = {
        name: given[f"route_{name}"] for name in ("small", "large") if f"route_{name}" in given
    }
    if policy:
        routes["policy"] = policy
    return {
        "name": given.get("name", ""),
        "indexed_fields": _parse_fields(form.get("indexed_fields", "")),
        "search": search,
        **({"routes": routes} if routes else {}),
    }


def _list(
    request: Request,
    platform: Platform,
    rows: list[Namespace],
    *,
    form: dict[str, str],
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "namespaces.html",
        status_code=status_code,
        namespaces=rows,
        form=form,
        error=error,
        generators=sorted(platform.query.catalog.generators),
        settings=SETTINGS,
        choices=CHOICES,
    )


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


@router.get("/namespaces/{name}/versions")
def versions_page(
    request: Request,
    name: str,
    console: ConsoleDep,
    db: SessionDep,
    external_id: Annotated[str, Query(min_length=1, max_length=256)],
) -> Response:
    """The versions of one ``external_id`` (``GET .../documents?external_id=``): the current
    one (the newest indexed: the one answers cite) and newer ones still indexing or failed.
    Replaced versions are gone (:mod:`app.services.versions`)."""
    access = authorize_tenant_scope(console.caller, ADMIN)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    rows, _ = documents.list_documents(
        db, namespace=namespace, limit=PAGE_SIZE, offset=0, external_id=external_id
    )
    indexed = [d.version for d in rows if d.state == DocumentState.INDEXED]
    return render(
        request,
        "versions.html",
        namespace=namespace,
        external_id=external_id,
        versions=sorted(rows, key=lambda d: d.version, reverse=True),
        current=max(indexed, default=None),
    )


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
