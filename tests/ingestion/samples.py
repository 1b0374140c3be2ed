"""Builders of real upload files (PDF, DOCX, ZIP bombs), made in memory for the tests.

PDFs are written byte by byte: a catalog, a page tree, one Helvetica font and a text content
stream per page, with a correct cross-reference table, so that pypdf reads them as it reads any
producer's files. Nothing here is a mock of the libraries the parsers use.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence

import docx
from pypdf import PdfReader, PdfWriter

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def pdf_string(text: str) -> bytes:
    """``text`` as a PDF literal string (Latin-1 only, as Helvetica's WinAnsi encoding)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def text_stream(text: str) -> bytes:
    """A content stream that shows ``text``, one line per line of it, from the page's top."""
    operations = [b"BT", b"/F1 12 Tf", b"72 720 Td", b"14 TL"]
    operations += [pdf_string(line) + b" Tj T*" for line in text.split("\n")]
    operations.append(b"ET")
    return b"\n".join(operations)


def make_pdf(pages: Sequence[str], *, title: str | None = None, compress: bool = True) -> bytes:
    """A PDF with one page per text of ``pages`` (an empty text: a page without text)."""
    streams = [text_stream(text) if text else b"" for text in pages]
    return pdf_from_streams(
        [zlib.compress(s) for s in streams] if compress else streams, title=title, flate=compress
    )


def pdf_from_streams(
    streams: Sequence[bytes], *, title: str | None = None, flate: bool = False
) -> bytes:
    """A PDF whose pages have these content streams, already encoded when ``flate``."""
    font, first_page = 3, 4
    kids = [first_page + 2 * index for index in range(len(streams))]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % kid for kid in kids), len(kids)),
        font: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for page, stream in zip(kids, streams, strict=True):
        objects[page] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font, page + 1)
        )
        flt = b" /Filter /FlateDecode" if flate else b""
        objects[page + 1] = b"<< /Length %d%s >>\nstream\n%s\nendstream" % (
            len(stream),
            flt,
            stream,
        )
    info = b""
    if title is not None:
        number = first_page + 2 * len(streams)
        objects[number] = b"<< /Title %s /Producer (Shoal tests) >>" % pdf_string(title)
        info = b" /Info %d 0 R" % number
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[number] for number in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (size, info, xref)
    return bytes(out)


def encrypt_pdf(data: bytes, *, user_password: str) -> bytes:
    """``data`` encrypted with RC4 (AES needs a package Shoal does not install)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(document: docx.document.Document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_docx(paragraphs: Sequence[str], *, title: str | None = None) -> bytes:
    """A Word document: an optional ``Title`` paragraph, then plain paragraphs."""
    document = docx.Document()
    if title is not None:
        document.add_heading(title, level=0)
    for text in paragraphs:
        document.add_paragraph(text)
    return docx_bytes(document)


def add_zip_entry(archive: bytes, name: str, content: bytes) -> bytes:
    """``archive`` with one more entry, deflated at the highest level."""
    out = io.BytesIO(archive)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(name, content)
    return out.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return out.getvalue()
