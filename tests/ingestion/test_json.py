"""JSON and JSONL: uploads split into records; a record, or any other JSON, parsed to text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.config import IngestionConfig
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.parsers import JSON, JSONL, Record, parse, split_records
from tests.data import SCIFACT

RESERVED = {"text", "title", "_id"}
SCIFACT_CORPUS = SCIFACT / "corpus.jsonl"
CORPUS: list[dict[str, Any]] = [
    {
        "_id": "4983",
        "title": "Microstructural development of human newborn cerebral white matter",
        "text": "Alterations of the architecture of cerebral white matter in the developing "
        "human brain can affect cortical development.",
        "metadata": {"year": 2002, "journal": "Pediatrics"},
    },
    {"_id": 5836, "title": "Induction of myelodysplasia", "text": "Myelodysplastic syndromes."},
    {"_id": "7912", "text": "No title here.", "source": "pubmed", "metadata": {"source": "x"}},
]


def jsonl(objects: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(obj) + "\n" for obj in objects).encode()


def test_jsonl_is_one_record_per_line_with_id_title_and_metadata() -> None:
    records = split_records(jsonl(CORPUS), media_type=JSONL)
    assert [r.external_id for r in records] == ["4983", "5836", "7912"]
    assert [r.title for r in records] == [CORPUS[0]["title"], CORPUS[1]["title"], None]
    assert records[0].metadata == {"year": 2002, "journal": "Pediatrics"}
    assert records[1].metadata == {}
    # A top-level field wins over the nested metadata object's field of the same name.
    assert records[2].metadata == {"source": "pubmed"}


def test_each_record_is_its_object_alone_as_compact_json() -> None:
    records = split_records(jsonl(CORPUS), media_type=JSONL)
    assert [json.loads(r.data) for r in records] == CORPUS
    assert b"\n" not in records[0].data
    assert b'","title":"' in records[0].data


def test_a_json_array_is_one_record_per_element_and_an_object_one_record() -> None:
    array = split_records(json.dumps(CORPUS, indent=2).encode(), media_type=JSON)
    assert [r.external_id for r in array] == ["4983", "5836", "7912"]
    single = split_records(json.dumps(CORPUS[0]).encode(), media_type=JSON)
    assert single == [array[0]]


def test_blank_lines_and_crlf_line_ends_are_fine() -> None:
    data = jsonl(CORPUS[:2]).replace(b"\n", b"\r\n\r\n")
    assert len(split_records(data, media_type=JSONL)) == 2


def test_field_names_are_configurable() -> None:
    config = IngestionConfig(json_text_field="body", json_title_field="name", json_id_field="id")
    data = json.dumps({"id": 7, "name": "Seven", "body": "The text.", "text": "metadata now"})
    (record,) = split_records(data.encode(), media_type=JSON, config=config)
    assert (record.external_id, record.title, record.metadata) == (
        "7",
        "Seven",
        {"text": "metadata now"},
    )
    doc = parse(record.data, media_type=JSON, config=config)
    assert doc.text == "Seven\n\nThe text."


def test_a_record_parses_to_its_title_then_its_text() -> None:
    (record, *_) = split_records(jsonl(CORPUS), media_type=JSONL)
    doc = parse(record.data, media_type=JSON)
    assert doc.title == CORPUS[0]["title"]
    assert doc.text == f"{CORPUS[0]['title']}\n\n{CORPUS[0]['text']}"
    assert doc.media_type == JSON


def test_the_title_can_be_left_out_of_the_text() -> None:
    config = IngestionConfig(json_title_in_text=False)
    doc = parse(json.dumps(CORPUS[0]).encode(), media_type=JSON, config=config)
    assert doc.text == CORPUS[0]["text"]
    assert doc.title == CORPUS[0]["title"]


def test_a_jsonl_file_of_one_record_parses_too() -> None:
    doc = parse(jsonl(CORPUS[2:]), media_type=JSONL)
    assert doc.text == "No title here."


@pytest.mark.parametrize(
    ("record", "text"),
    [
        ({"title": "t", "n": 1}, "title: t\nn: 1"),
        ({"text": 42, "title": "t"}, "text: 42\ntitle: t"),
    ],
)
def test_a_record_without_a_string_text_field_is_flattened(
    record: dict[str, Any], text: str
) -> None:
    doc = parse(json.dumps(record).encode(), media_type=JSON)
    assert (doc.text, doc.title) == (text, "t")


def test_parsing_a_file_of_several_records_asks_for_it_to_be_split() -> None:
    with pytest.raises(ParseError, match="holds 3 JSON records"):
        parse(jsonl(CORPUS), media_type=JSONL)


def test_a_bad_line_is_refused_naming_its_line_number() -> None:
    data = jsonl(CORPUS[:2]) + b'{"_id": "x", "text": "unterminated}\n' + jsonl(CORPUS[2:])
    with pytest.raises(ParseError) as caught:
        split_records(data, media_type=JSONL)
    assert str(caught.value).startswith("line 3: not valid JSON: ")


def test_a_line_that_is_not_an_object_is_a_record_of_its_own() -> None:
    records = split_records(b'{"text": "a"}\n["b", 2]\n"c"\n', media_type=JSONL)
    assert [r.data for r in records] == [b'{"text":"a"}', b'["b",2]', b'"c"']
    assert (records[1].metadata, records[1].external_id, records[1].title) == ({}, None, None)
    assert [parse(r.data, media_type=JSON).text for r in records] == ["a", "[0]: b\n[1]: 2", "c"]


@pytest.mark.parametrize(
    ("data", "media_type", "reason"),
    [
        (b'{"text": "a",}', JSON, "not valid JSON"),
        (b"[]", JSON, "no JSON records"),
        (b"  \n\n", JSONL, "no JSON records"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, "nested too deeply"),
        (bytes(range(256)) * 8, JSON, "not text"),
        (b'{"n": ' + b"7" * 5000 + b"}", JSON, "more than 4300 digits; write it as a string"),
    ],
)
def test_json_that_cannot_be_read_is_refused_with_a_reason(
    data: bytes, media_type: str, reason: str
) -> None:
    with pytest.raises(ParseError, match=reason):
        split_records(data, media_type=media_type)


def test_more_records_than_the_limit_are_refused_naming_the_limit() -> None:
    config = IngestionConfig(max_records=2)
    for data, media_type in ((jsonl(CORPUS), JSONL), (json.dumps(CORPUS).encode(), JSON)):
        with pytest.raises(DocumentTooLargeError) as caught:
            split_records(data, media_type=media_type, config=config)
        assert "the limit is 2 (SHOAL_INGESTION__MAX_RECORDS)" in str(caught.value)


def test_the_scifact_corpus_is_5183_records() -> None:
    records = split_records(SCIFACT_CORPUS.read_bytes(), media_type=JSONL)
    assert len(records) == 5183
    assert len({r.external_id for r in records}) == 5183
    assert records[0].external_id == "4983"
    assert all(r.title for r in records)
    assert all(parse(r.data, media_type=JSON).text for r in records[:200])


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
objects = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(scalars, st.dictionaries(st.text(max_size=5), scalars, max_size=3)),
    max_size=6,
)


@given(st.lists(objects, min_size=1, max_size=8))
def test_records_round_trip_whatever_their_fields(originals: list[dict[str, Any]]) -> None:
    for data, media_type in ((jsonl(originals), JSONL), (json.dumps(originals).encode(), JSON)):
        records = split_records(data, media_type=media_type)
        assert [json.loads(r.data) for r in records] == originals
        for original, record in zip(originals, records, strict=True):
            assert_fields(original, record)


def assert_fields(original: dict[str, Any], record: Record) -> None:
    ident = original.get("_id")
    assert record.external_id == (
        ident if ident in (None, "") or isinstance(ident, str) else json.dumps(ident)
    )
    nested = original.get("metadata")
    nested = nested if isinstance(nested, dict) else {}
    top = {
        k: v
        for k, v in original.items()
        if k not in RESERVED and not (k == "metadata" and v is nested)
    }
    assert record.metadata == {**nested, **top}  # every other field; the top level wins
