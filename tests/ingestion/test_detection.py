"""An upload's type comes from its extension, then its declared type, then its bytes."""

from __future__ import annotations

import codecs

import pytest

from ingestion.errors import UnsupportedMediaError
from ingestion.parsers import (
    DOCX,
    HTML,
    JSON,
    JSONL,
    PDF,
    SUPPORTED_MEDIA_TYPES,
    XHTML,
    detect_media_type,
)
from tests.ingestion.conftest import noise
from tests.ingestion.samples import make_docx, make_pdf, make_zip

TEXT = b"just some words\n"


def test_supported_media_types_are_every_parsed_format() -> None:
    assert (
        frozenset({"text/plain", "text/markdown", HTML, XHTML, PDF, DOCX, JSON, JSONL})
        == SUPPORTED_MEDIA_TYPES
    )


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("notes.txt", "text/plain"),
        ("notes.text", "text/plain"),
        ("server.log", "text/plain"),
        ("README.md", "text/markdown"),
        ("guide.markdown", "text/markdown"),
        ("guide.mdown", "text/markdown"),
        ("SHOUTING.MD", "text/markdown"),
        ("page.html", HTML),
        ("page.htm", HTML),
        ("chapter.xhtml", XHTML),
        ("paper.pdf", PDF),
        ("letter.docx", DOCX),
        ("data.json", JSON),
        ("corpus.jsonl", JSONL),
        ("events.ndjson", JSONL),
    ],
)
def test_a_known_extension_decides(filename: str, expected: str) -> None:
    assert detect_media_type(TEXT, filename=filename) == expected


def test_the_extension_wins_over_the_declared_type() -> None:
    assert detect_media_type(TEXT, filename="a.md", declared="text/plain") == "text/markdown"


@pytest.mark.parametrize(
    ("filename", "media_type"),
    [
        ("memo.doc", "application/msword"),
        ("essay.odt", "application/vnd.oasis.opendocument.text"),
        ("letter.rtf", "application/rtf"),
        ("book.epub", "application/epub+zip"),
        ("deck.pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ("sheet.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("bundle.zip", "application/zip"),
        ("feed.xml", "application/xml"),
        ("photo.jpg", "image/jpeg"),
        ("diagram.png", "image/png"),
    ],
)
def test_a_known_unsupported_extension_is_refused_by_name(filename: str, media_type: str) -> None:
    with pytest.raises(UnsupportedMediaError) as caught:
        detect_media_type(TEXT, filename=filename, declared="text/plain")
    assert caught.value.media_type == media_type
    assert caught.value.filename == filename
    assert media_type in str(caught.value)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("text/plain", "text/plain"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("text/markdown", "text/markdown"),
        ("text/x-markdown", "text/markdown"),
        ("Text/Markdown; charset=UTF-8", "text/markdown"),
        ("text/html; charset=iso-8859-1", HTML),
        ("application/xhtml+xml", XHTML),
        ("application/pdf", PDF),
        (DOCX, DOCX),
        ("application/json", JSON),
        ("application/x-ndjson", JSONL),
        ("application/jsonl", JSONL),
    ],
)
def test_the_declared_type_decides_without_a_known_extension(declared: str, expected: str) -> None:
    assert detect_media_type(TEXT, filename="notes", declared=declared) == expected


@pytest.mark.parametrize(
    "declared", ["application/msword", "application/zip", "image/png", "application/xml"]
)
def test_an_unsupported_declared_type_is_refused_by_name(declared: str) -> None:
    with pytest.raises(UnsupportedMediaError) as caught:
        detect_media_type(TEXT, declared=f"{declared}; charset=utf-8")
    assert caught.value.media_type == declared


@pytest.mark.parametrize("declared", [None, "", "application/octet-stream"])
def test_a_generic_declared_type_leaves_the_bytes_to_decide(declared: str | None) -> None:
    assert detect_media_type(TEXT, filename="script.py", declared=declared) == "text/plain"


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (make_pdf(["A page."]), PDF),
        (make_docx(["A paragraph."]), DOCX),
        (b"<!DOCTYPE html>\n<html><body>hi</body></html>", HTML),
        (b"\n  <html lang='en'><body>hi</body></html>", HTML),
        (b"<?xml version='1.0'?>\n<html xmlns='http://www.w3.org/1999/xhtml'/>", HTML),
        (b"<p>A fragment</p>", HTML),
        (b"<div class='note'>A fragment</div>", HTML),
        (b"<!-- generated -->\n<table></table>", HTML),
        (b'{"title": "One record", "text": "Its text."}', JSON),
        (b'  [{"text": "a"}, {"text": "b"}]', JSON),
        (b'{"text": "a"}\n{"text": "b"}\n', JSONL),
    ],
)
def test_the_bytes_decide_without_a_name_or_type(data: bytes, media_type: str) -> None:
    assert detect_media_type(data, filename="upload", declared="application/octet-stream") == (
        media_type
    )


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (make_zip({"mimetype": b"application/epub+zip"}), "application/zip"),
        (b"PK\x03\x04\x14\x00\x06\x00", "application/zip"),  # a ZIP too broken to list
        (b"text with a \x00 NUL byte", "application/octet-stream"),
        (noise(2000, seed=0), "application/octet-stream"),
    ],
)
def test_sniffed_non_text_is_refused_by_name(data: bytes, media_type: str) -> None:
    with pytest.raises(UnsupportedMediaError) as caught:
        detect_media_type(data, filename="upload", declared="application/octet-stream")
    assert caught.value.media_type == media_type


@pytest.mark.parametrize(
    "data",
    [
        b"plain ascii",
        "caf\u00e9 \u4f60\u597d".encode(),
        codecs.BOM_UTF8 + b"with a BOM",
        "UTF-16 carries NUL bytes but also a BOM".encode("utf-16"),
        b"",
    ],
)
def test_sniffed_text_is_plain_text(data: bytes) -> None:
    assert detect_media_type(data) == "text/plain"


def test_markdown_that_mentions_html_later_is_still_text() -> None:
    assert detect_media_type(b"Use the <html> element.\n") == "text/plain"


@pytest.mark.parametrize(
    "data",
    [
        b"<Paragraph> is not an HTML tag",
        b"[link](http://example.com) and {braces}",
        b'{"broken": json',
        b"42",
        b'"a JSON string"',
    ],
)
def test_text_that_only_resembles_html_or_json_stays_plain(data: bytes) -> None:
    assert detect_media_type(data) == "text/plain"
