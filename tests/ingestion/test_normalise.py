"""Normalisation keeps offsets meaningful, and equal text gets an equal fingerprint."""

from __future__ import annotations

import codecs
import hashlib
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from ingestion.normalise import content_hash, fingerprint, normalise_text

CAFE_NFC = "Caf\u00e9 cr\u00e8me"
CAFE_NFD = unicodedata.normalize("NFD", CAFE_NFC)


def test_line_endings_become_newlines() -> None:
    assert normalise_text("a\r\nb\rc\nd") == "a\nb\nc\nd"


def test_text_becomes_nfc() -> None:
    assert CAFE_NFD != CAFE_NFC
    assert normalise_text(CAFE_NFD) == CAFE_NFC


def test_control_characters_are_removed_but_tabs_and_newlines_kept() -> None:
    assert normalise_text("a\x00b\x07c\x1bd\x7fe\x85f\x9fg\th\ni") == "abcdefg\th\ni"


def test_a_removed_control_character_lets_a_combining_mark_compose() -> None:
    assert normalise_text("e\x00\u0301") == "\u00e9"


def test_leading_byte_order_mark_is_stripped() -> None:
    assert normalise_text("\ufeffhello") == "hello"


def test_spaces_are_kept_so_offsets_stay_meaningful() -> None:
    text = "  two  spaces \n\n\n  and\ttabs  "
    assert normalise_text(text) == text


@given(st.text())
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once


@given(st.text())
def test_normalised_text_has_no_control_characters_but_tab_and_newline(text: str) -> None:
    controls = {c for c in normalise_text(text) if unicodedata.category(c) == "Cc"}
    assert controls <= {"\t", "\n"}


def test_content_hash_is_sha256_of_utf8() -> None:
    assert content_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_crlf_and_lf_uploads_have_the_same_fingerprint() -> None:
    lf = b"line one\nline two\n"
    assert fingerprint(lf.replace(b"\n", b"\r\n"), "text/plain") == fingerprint(lf, "text/plain")


def test_nfd_and_nfc_uploads_have_the_same_fingerprint() -> None:
    nfc, nfd = CAFE_NFC.encode(), CAFE_NFD.encode()
    assert nfc != nfd
    assert fingerprint(nfd, "text/markdown") == fingerprint(nfc, "text/markdown")


def test_encoding_and_byte_order_mark_do_not_change_the_fingerprint() -> None:
    text = "Caf\u00e9 na\u00efve r\u00e9sum\u00e9\n"
    expected = fingerprint(text.encode("utf-8"), "text/plain")
    assert fingerprint(codecs.BOM_UTF8 + text.encode("utf-8"), "text/plain") == expected
    assert fingerprint(text.encode("utf-16"), "text/plain") == expected


def test_different_text_has_a_different_fingerprint() -> None:
    assert fingerprint(b"one", "text/plain") != fingerprint(b"two", "text/plain")


def test_other_media_types_hash_the_raw_bytes() -> None:
    data = b"%PDF-1.7 whatever\r\n"
    assert fingerprint(data, "application/pdf") == hashlib.sha256(data).hexdigest()


def test_undecodable_text_hashes_the_raw_bytes() -> None:
    data = bytes(range(128, 256)) * 4
    assert fingerprint(data, "text/plain") == hashlib.sha256(data).hexdigest()
