"""PDF: text per page with page numbers, metadata title, and every way a PDF is refused."""

from __future__ import annotations

import zlib

import pytest
from structlog.testing import capture_logs

from ingestion.config import IngestionConfig
from ingestion.document import ParsedDocument
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.parsers import PDF, parse
from ingestion.parsers.pdf import STREAM_LIMIT_BYTES
from tests.ingestion.samples import encrypt_pdf, make_pdf, pdf_from_streams, text_stream

PAPER = [
    "Tidal Energy in Narrow Straits\nA study of the Menai Strait.",
    "1. Introduction\nTidal streams in narrow straits reach four knots (7.4 km/h).",
    "",  # a full-page figure: no text
    "2. Results\nThe array yielded 2.1 MW at spring tides.",
]


def parse_pdf(data: bytes, **limits: int) -> ParsedDocument:
    return parse(data, media_type=PDF, filename="paper.pdf", config=IngestionConfig(**limits))


def test_each_page_is_a_span_of_the_text_numbered_from_one() -> None:
    doc = parse_pdf(make_pdf(PAPER))
    assert doc.media_type == PDF
    assert [page.number for page in doc.pages] == [1, 2, 3, 4]
    assert [doc.text[p.start : p.end] for p in doc.pages] == PAPER
    assert doc.text == "\n\n".join(PAPER)


def test_a_page_without_text_is_an_empty_span_between_its_neighbours() -> None:
    _, second, figure, last = parse_pdf(make_pdf(PAPER)).pages
    assert figure.start == figure.end
    assert second.end < figure.start < last.start


def test_title_comes_from_the_metadata() -> None:
    assert parse_pdf(make_pdf(PAPER, title="  Tidal   Energy ")).title == "Tidal Energy"
    assert parse_pdf(make_pdf(PAPER)).title is None


def test_an_unreadable_information_dictionary_costs_only_the_title_and_is_logged() -> None:
    data = make_pdf(PAPER, title="Tidal")
    info = b"<< /Title (Tidal) /Producer (Shoal tests) >>"
    assert data.count(info) == 1
    # An array where the trailer's /Info must point to a dictionary, at the same offsets.
    broken = data.replace(info, b"[" + b" " * (len(info) - 2) + b"]")
    with capture_logs() as logs:
        doc = parse_pdf(broken)
    assert doc.title is None
    assert doc.text == "\n\n".join(PAPER)
    [event] = [e for e in logs if e["event"] == "pdf_title_unreadable"]
    assert event["log_level"] == "warning"
    assert event["error"] == "PdfReadError"
    assert "document information dictionary" in event["detail"]


def test_uncompressed_content_streams_are_read_too() -> None:
    doc = parse_pdf(make_pdf(["plain stream"], compress=False))
    assert doc.text == "plain stream"


def test_a_pdf_that_opens_without_a_password_is_read_even_if_encrypted() -> None:
    protected = encrypt_pdf(make_pdf(PAPER), user_password="")
    assert parse_pdf(protected).text == "\n\n".join(PAPER)


def test_a_pdf_that_needs_a_password_is_refused_as_encrypted() -> None:
    with pytest.raises(ParseError, match="PDF is encrypted"):
        parse_pdf(encrypt_pdf(make_pdf(PAPER), user_password="s3cret"))


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\nthis is not really a PDF\n",
        b"%PDF-",
        b"",
        make_pdf(PAPER)[:300],
    ],
    ids=["garbage", "header-only", "empty", "truncated"],
)
def test_corrupt_bytes_are_refused_as_not_a_valid_pdf(data: bytes) -> None:
    with pytest.raises(ParseError, match=r"not a valid PDF: ."):
        parse_pdf(data)


def test_a_pdf_with_no_text_at_all_is_refused() -> None:
    with pytest.raises(ParseError, match="no text"):
        parse_pdf(make_pdf(["", ""]))


def test_more_pages_than_the_limit_is_refused_naming_the_limit() -> None:
    with pytest.raises(DocumentTooLargeError) as caught:
        parse_pdf(make_pdf([""] * 2001))
    assert str(caught.value) == (
        "PDF has 2001 pages; the limit is 2000 (SHOAL_INGESTION__MAX_PAGES)"
    )


def test_the_page_limit_is_configurable() -> None:
    assert len(parse_pdf(make_pdf(PAPER), max_pages=4).pages) == 4
    with pytest.raises(DocumentTooLargeError, match=r"limit is 3 \(SHOAL_INGESTION__MAX_PAGES\)"):
        parse_pdf(make_pdf(PAPER), max_pages=3)


def test_more_text_than_the_character_limit_is_refused_naming_the_limit() -> None:
    with pytest.raises(DocumentTooLargeError) as caught:
        parse_pdf(make_pdf(PAPER), max_chars=100)
    assert "by page 2; the limit is 100 (SHOAL_INGESTION__MAX_CHARS)" in str(caught.value)


def test_a_decompression_bomb_is_refused_before_it_fills_memory() -> None:
    # About 100 KiB that inflate to 100 MB of text: more than any one stream may hold.
    bomb = zlib.compress(text_stream("A" * 100_000_000), 9)
    assert len(bomb) < 200_000
    with pytest.raises(DocumentTooLargeError) as caught:
        parse_pdf(pdf_from_streams([bomb], flate=True))
    assert "decompression bomb" in str(caught.value)
    assert f"{STREAM_LIMIT_BYTES // (1024 * 1024)} MiB" in str(caught.value)


def test_a_page_whose_text_passes_the_character_limit_is_refused_after_inflating() -> None:
    # Well under the stream limit, yet one page's text passes the character limit.
    stream = zlib.compress(text_stream("word " * 50_000))
    with pytest.raises(DocumentTooLargeError, match="by page 1; the limit is 100000 "):
        parse_pdf(pdf_from_streams([stream], flate=True), max_chars=100_000)
