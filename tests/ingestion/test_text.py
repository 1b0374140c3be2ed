"""Plain text: decoded from UTF-8 or whatever encoding charset-normalizer recognises."""

from __future__ import annotations

import codecs

import pytest

from ingestion.errors import ParseError, UnsupportedMediaError
from ingestion.parsers import parse
from ingestion.parsers.text import decode_text
from tests.ingestion.conftest import noise

FRENCH = (
    "Le caf\u00e9 \u00e9tait tr\u00e8s agr\u00e9able; nous avons mang\u00e9 des cr\u00eapes "
    "\u00e0 la cr\u00e8me et bu du th\u00e9 glac\u00e9. O\u00f9 est la biblioth\u00e8que? "
    "\u00c7a d\u00e9pend de l'\u00e9l\u00e8ve.\n"
) * 3


def test_utf8_is_decoded_with_or_without_a_byte_order_mark() -> None:
    assert decode_text(FRENCH.encode()) == FRENCH
    assert decode_text(codecs.BOM_UTF8 + FRENCH.encode()) == FRENCH


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_decoded(encoding: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    assert decode_text(bom + FRENCH.encode(encoding)) == FRENCH


def test_latin1_is_recognised_by_charset_normalizer() -> None:
    assert decode_text(FRENCH.encode("latin-1")) == FRENCH


def test_random_bytes_are_not_text() -> None:
    with pytest.raises(ParseError):
        decode_text(noise(4000, seed=1))


def test_parsed_text_is_normalised_and_has_no_title() -> None:
    doc = parse(b"\xef\xbb\xbfone\r\ntwo\x00\r\n", media_type="text/plain", filename="a.txt")
    assert doc.text == "one\ntwo\n"
    assert doc.media_type == "text/plain"
    assert doc.title is None
    assert doc.sections == ()


@pytest.mark.parametrize("data", [b"", b" \r\n\t\n", b"\x00\x01\x02\x03" * 50])
@pytest.mark.parametrize("media_type", ["text/plain", "text/markdown"])
def test_a_document_without_text_fails_to_parse(data: bytes, media_type: str) -> None:
    with pytest.raises(ParseError, match="document has no text"):
        parse(data, media_type=media_type)


def test_undecodable_bytes_fail_to_parse() -> None:
    with pytest.raises(ParseError):
        parse(noise(4000, seed=2), media_type="text/plain")


def test_a_type_without_a_parser_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaError) as caught:
        parse(b"\xd0\xcf\x11\xe0", media_type="application/msword", filename="a.doc")
    assert caught.value.media_type == "application/msword"
