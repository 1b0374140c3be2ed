"""``/v1/namespaces/{ns}/documents``: upload and delete (write), list and read (write, query)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.db.models import Document
from app.errors import InvalidRequestError, PayloadTooLargeError
from app.gateway.deps import CallerDep, PlatformDep, SessionDep
from app.schemas.documents import DocumentPage, DocumentPublic, DocumentsUpload, UploadAccepted
from app.services import documents, namespaces
from app.services.idempotency import KEY_TTL, MAX_KEY_LENGTH, make_claim, request_hash
from app.services.keys import WRITE, authorize_tenant_reader, authorize_tenant_scope
from app.services.uploads import UploadItem

router = APIRouter(prefix="/v1/namespaces/{ns}/documents", tags=["documents"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DocumentsUpload.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "metadata": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "JSON objects: one for all files, or one per file.",
                        },
                    },
                }
            },
        },
    }
}


# Set on an answer replayed for an Idempotency-Key seen before.
REPLAYED_HEADER = "Idempotent-Replayed"
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description=(
            "Makes a retry safe: the same key with the same namespace and documents within "
            f"{KEY_TTL.total_seconds() / 3600:g} hours returns the first answer and job; with "
            "other documents it is a 422."
        ),
    ),
]

# One option for the whole request, so that multipart and JSON bodies ask for it alike.
RecordsQuery = Annotated[
    bool,
    Query(
        description=(
            "Index each element of a JSON file's top-level array as its own document (its id "
            "field the external id, its other fields metadata), whatever its fields. Unset: "
            "only an array of objects some of which have the text field is split, and any "
            "other JSON file is one document; JSONL is always split."
        ),
    ),
]


@router.post("", status_code=202, openapi_extra=_UPLOAD_BODY)
async def upload_documents(
    ns: str,
    request: Request,
    response: Response,
    caller: CallerDep,
    session: SessionDep,
    platform: PlatformDep,
    idempotency_key: IdempotencyKeyHeader = None,
    records: RecordsQuery = False,
) -> UploadAccepted:
    """Accept documents for indexing; answers at once with the job to follow."""
    access = authorize_tenant_scope(caller, WRITE)
    # Resolve the namespace before reading the body: a wrong name must not cost an upload.
    namespace = await run_in_threadpool(
        namespaces.get_namespace,
        session,
        access=access,
        name=ns,
        embedded_by=platform.embedder.model_id,
    )
    # End the read transaction before the body streams in: on SQLite every transaction holds
    # the write lock (BEGIN IMMEDIATE), which indexing workers wait on meanwhile.
    await run_in_threadpool(session.commit)
    limit = platform.settings.max_upload_mb * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body over the {platform.settings.max_upload_mb} MiB limit"
        )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        items = await _multipart_items(request, limit)
    else:
        items = _json_items(await _read_body(request, limit))
    result = await run_in_threadpool(
        documents.upload,
        session,
        namespace=namespace,
        items=items,
        enqueue=platform.enqueue,
        ingestion=platform.settings.ingestion,
        records=records,
        idempotency=(
            None
            if idempotency_key is None
            else make_claim(idempotency_key, request_hash(namespace.id, items, records=records))
        ),
    )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return UploadAccepted.model_validate(result.response)


@router.get("")
def list_documents(
    ns: str,
    caller: CallerDep,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31 - 1),  # past 2**63 the database's integer overflowed
    external_id: str | None = Query(
        None,
        max_length=256,
        description="Only the versions of this external id (oldest first): the current one, "
        "and newer ones still indexing or failed.",
    ),
) -> DocumentPage:
    namespace = namespaces.get_namespace(session, access=authorize_tenant_reader(caller), name=ns)
    rows, total = documents.list_documents(
        session, namespace=namespace, limit=limit, offset=offset, external_id=external_id
    )
    return DocumentPage(items=[_public(d) for d in rows], total=total, limit=limit, offset=offset)


@router.get("/{document_id}")
def get_document(
    ns: str, document_id: str, caller: CallerDep, session: SessionDep
) -> DocumentPublic:
    namespace = namespaces.get_namespace(session, access=authorize_tenant_reader(caller), name=ns)
    return _public(documents.get_document(session, namespace=namespace, document_id=document_id))


@router.delete("/{document_id}", status_code=204)
def delete_document(
    ns: str, document_id: str, caller: CallerDep, session: SessionDep, platform: PlatformDep
) -> Response:
    access = authorize_tenant_scope(caller, WRITE)
    namespace = namespaces.get_namespace(session, access=access, name=ns)
    documents.delete_document(
        session,
        namespace=namespace,
        document_id=document_id,
        store=platform.store,
        answers=platform.query.answers,
    )
    return Response(status_code=204)


def _public(document: Document) -> DocumentPublic:
    return DocumentPublic(
        id=document.id,
        filename=document.filename,
        media_type=document.media_type,
        external_id=document.external_id,
        version=document.version,
        metadata=document.meta,
        size_bytes=document.size_bytes,
        state=document.state.value,
        reason=document.reason,
        chunk_count=document.chunk_count,
        created_at=document.created_at,
        updated_at=document.updated_at,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` (a chunked body has no length header)."""
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLargeError(f"request body over the {limit // (1024 * 1024)} MiB limit")
        parts.append(part)
    return b"".join(parts)


def _json_items(body: bytes) -> list[UploadItem]:
    try:
        upload = DocumentsUpload.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    return [doc.item(i) for i, doc in enumerate(upload.documents)]


async def _multipart_items(request: Request, limit: int) -> list[UploadItem]:
    # The context manager closes the spooled temporary files of the parts.
    async with request.form(max_files=1000, max_fields=1000) as form:
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequestError(
                "a multipart upload needs at least one 'files' part", field="files"
            )
        metadata = [_metadata(m, i) for i, m in enumerate(form.getlist("metadata"))]
        if len(metadata) not in (0, 1, len(files)):
            raise InvalidRequestError(
                f"{len(metadata)} metadata parts for {len(files)} files: "
                "give none, one, or one per file",
                field="metadata",
            )
        items = []
        total = 0
        for i, upload in enumerate(files):
            data = await upload.read()
            total += len(data)
            if total > limit:
                raise PayloadTooLargeError(
                    f"request body over the {limit // (1024 * 1024)} MiB limit"
                )
            meta = metadata[i] if len(metadata) == len(files) else (metadata[0] if metadata else {})
            items.append(
                UploadItem(
                    data=data,
                    filename=upload.filename,
                    declared_type=upload.content_type,
                    metadata=meta,
                )
            )
        return items


def _metadata(raw: object, index: int) -> dict[str, Any]:
    try:
        value = json.loads(raw if isinstance(raw, str) else "")
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"metadata part {index} is not JSON", field="metadata") from exc
    if not isinstance(value, dict):
        raise InvalidRequestError(f"metadata part {index} is not a JSON object", field="metadata")
    return value
