"""Documents and the jobs that index them: uploads, pages, states."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from app.errors import InvalidRequestError
from app.schemas.common import Strict
from app.services.jobs import JobStatus
from app.services.uploads import UploadItem


class DocumentIn(Strict):
    text: str | None = Field(None, description="The document as text; or `content_base64`.")
    content_base64: str | None = Field(None, description="The file's bytes, base64-encoded.")
    filename: str | None = Field(None, max_length=512)
    metadata: dict[str, Any] = Field(default_factory=dict)
    external_id: str | None = Field(
        None,
        max_length=256,
        description="Your id for the document; new content under an id in use is its next "
        "version, which replaces the previous one once indexed.",
    )

    def item(self, index: int) -> UploadItem:
        """The upload item this document is, the ``index``-th of its request.

        Raises:
            InvalidRequestError: neither or both of text and content_base64, or bad base64.
        """
        if (self.text is None) == (self.content_base64 is None):
            raise InvalidRequestError(
                "give exactly one of text and content_base64", field=f"documents.{index}"
            )
        if self.text is not None:
            data = self.text.encode()
            declared = "text/plain" if self.filename is None else None
        else:
            try:
                data = base64.b64decode(self.content_base64 or "", validate=True)
            except binascii.Error as exc:
                raise InvalidRequestError(
                    "content_base64 is not valid base64", field=f"documents.{index}.content_base64"
                ) from exc
            declared = None
        return UploadItem(
            data=data,
            filename=self.filename,
            declared_type=declared,
            metadata=self.metadata,
            external_id=self.external_id,
        )


class DocumentsUpload(Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class UploadedDocumentPublic(BaseModel):
    id: str
    state: str
    duplicate: bool
    filename: str | None
    version: int = Field(
        description="1, or the next version when the `external_id` is already in the namespace."
    )


class UploadAccepted(BaseModel):
    job_id: str
    documents: list[UploadedDocumentPublic]


class DocumentPublic(BaseModel):
    id: str
    filename: str | None
    media_type: str
    external_id: str | None
    version: int = Field(description="Counts the uploads under one `external_id`, from 1.")
    metadata: dict[str, Any]
    size_bytes: int
    state: str
    reason: str | None
    chunk_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class DocumentPage(BaseModel):
    items: list[DocumentPublic]
    total: int
    limit: int
    offset: int


class JobDocumentPublic(BaseModel):
    id: str
    state: str
    reason: str | None = None
    duplicate: bool
    filename: str | None


class JobPublic(BaseModel):
    id: str
    namespace_id: str
    state: Literal["queued", "running", "succeeded", "partial", "failed"]
    counts: dict[str, int]
    documents: list[JobDocumentPublic]
    created_at: dt.datetime

    @classmethod
    def of(cls, status: JobStatus) -> Self:
        return cls(
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
