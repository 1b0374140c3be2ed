"""JSON of any shape is indexed: what is split into records, and how the rest reads as text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.config import IngestionConfig
from ingestion.errors import DocumentTooLargeError, ParseError
from ingestion.normalise import normalise_text
from ingestion.parsers import JSON, JSONL, parse, split_records, split_upload
from ingestion.parsers.flatten import MAX_DEPTH

CRANES = {
    "title": "Cranes",
    "body": "Sandhill cranes dance in pairs on the Platte river each March.",
    "year": 2021,
}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def text_of(value: Any, **config: Any) -> str:
    return parse(dumps(value), media_type=JSON, config=IngestionConfig(**config)).text


def test_an_object_without_a_text_field_is_one_document_with_its_title() -> None:
    assert split_upload(dumps(CRANES), media_type=JSON) is None  # the file as it is
    doc = parse(dumps(CRANES), media_type=JSON)
    assert doc.text == (
        "title: Cranes\n"
        "body: Sandhill cranes dance in pairs on the Platte river each March.\n"
        "year: 2021"
    )
    assert doc.title == "Cranes"
    assert doc.media_type == JSON


def test_the_title_field_is_configurable_and_only_a_string_is_a_title() -> None:
    named = parse(
        dumps({"name": "  Grey \n crane ", "n": 1}),
        media_type=JSON,
        config=IngestionConfig(json_title_field="name"),
    )
    assert named.title == "Grey crane"
    assert parse(dumps({"title": 7, "body": "x"}), media_type=JSON).title is None
    # A top-level array has no title of its own: each element's would be one of many.
    assert parse(dumps([{"title": "a"}, {"title": "b"}]), media_type=JSON).title is None


def test_nested_objects_read_as_dotted_paths_in_document_order() -> None:
    book = {"book": {"name": "Notes", "author": {"name": "Ada", "born": 1815}, "pages": 65}}
    assert text_of(book) == (
        "book.name: Notes\nbook.author.name: Ada\nbook.author.born: 1815\nbook.pages: 65"
    )


def test_arrays_of_scalars_put_each_element_on_its_own_line() -> None:
    assert text_of({"tags": ["crane", "wetland"]}) == "tags[0]: crane\ntags[1]: wetland"
    assert text_of(["crane", 2, True]) == "[0]: crane\n[1]: 2\n[2]: true"


def test_arrays_of_objects_are_flattened_the_same_way() -> None:
    paper = {"authors": [{"name": "Ada", "born": 1815}, {"name": "Alan", "tags": ["ai"]}]}
    assert text_of(paper) == (
        "authors[0].name: Ada\nauthors[0].born: 1815\nauthors[1].name: Alan\nauthors[1].tags[0]: ai"
    )


def test_booleans_read_true_or_false_and_nulls_blanks_and_empties_leave_no_line() -> None:
    value: dict[str, Any] = {
        "a": None,
        "b": {},
        "c": [],
        "d": " \n",
        "e": False,
        "f": [None, {}],
        "g": True,
    }
    assert text_of(value) == "e: false\ng: true"


def test_numbers_keep_their_literal() -> None:
    huge = "9" * 5000  # past the 4300 digits Python turns into an int
    data = b'{"a": 1.50, "b": 1e400, "c": -0, "d": ' + huge.encode() + b"}"
    doc = parse(data, media_type=JSON)
    assert doc.text == f"a: 1.50\nb: 1e400\nc: -0\nd: {huge}"


@pytest.mark.parametrize(("value", "text"), [("just a string", "just a string"), (42, "42")])
def test_a_top_level_scalar_is_its_own_text(value: Any, text: str) -> None:
    assert split_upload(dumps(value), media_type=JSON) is None
    assert text_of(value) == text


@pytest.mark.parametrize("value", [{}, [], None, {"a": None}, [{}, [[]]], {"a": {"b": ""}}])
def test_json_without_a_single_text_leaf_fails_saying_so(value: Any) -> None:
    with pytest.raises(ParseError, match="the JSON holds no text: no string, number or boolean"):
        parse(dumps(value), media_type=JSON)


def test_a_record_keeps_its_text_field_and_leaves_the_rest_to_metadata() -> None:
    record = {"_id": "c1", "title": "Cranes", "text": "Cranes dance.", "year": 2021}
    doc = parse(dumps(record), media_type=JSON)
    assert (doc.text, doc.title) == ("Cranes\n\nCranes dance.", "Cranes")


def test_nesting_up_to_the_limit_is_flattened_and_deeper_fails_with_a_reason() -> None:
    def nest(levels: int) -> Any:
        value: Any = "deep"
        for _ in range(levels):
            value = {"k": value}
        return value

    assert text_of(nest(MAX_DEPTH)) == ".".join(["k"] * MAX_DEPTH) + ": deep"
    with pytest.raises(ParseError, match=f"more than {MAX_DEPTH} levels deep; flatten it"):
        parse(dumps(nest(MAX_DEPTH + 1)), media_type=JSON)
    # Deeper than the JSON parser itself goes: a reason too, not a crash.
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(b"[" * 100_000 + b"]" * 100_000, media_type=JSON)


def test_text_past_the_character_limit_fails_before_it_is_all_built() -> None:
    # A 100,000-character key repeated on each of 100,000 lines would be 10^10 characters.
    value = {"k" * 100_000: list(range(100_000))}
    with pytest.raises(DocumentTooLargeError, match=r"the limit is 1000000 \(SHOAL_INGESTION"):
        text_of(value, max_chars=1_000_000)


@pytest.mark.parametrize(
    ("value", "records"),
    [
        ([{"title": "a"}, {"title": "b"}], None),  # no element carries the text field
        ([{"text": "a"}, "b"], None),  # not all elements are objects
        ([], None),
        ([{"text": "a"}, {"title": "b"}], [b'{"text":"a"}', b'{"title":"b"}']),
        ({"text": "a", "n": 1}, [b'{"text":"a","n":1}']),
        ({"text": 1}, None),  # its text field is not a string: not a record
    ],
)
def test_records_are_split_only_where_elements_carry_the_text_field(
    value: Any, records: list[bytes] | None
) -> None:
    split = split_upload(dumps(value), media_type=JSON)
    assert (split if split is None else [r.data for r in split]) == records


def test_asking_for_records_splits_any_array_and_makes_any_object_a_record() -> None:
    people = [{"_id": 1, "name": "Ada", "born": 1815}, "Alan", {"name": "Grace"}]
    split = split_upload(dumps(people), media_type=JSON, records=True) or []
    assert [(r.external_id, r.metadata) for r in split] == [
        ("1", {"name": "Ada", "born": 1815}),
        (None, {}),
        (None, {"name": "Grace"}),
    ]
    # Each record without a text field is flattened at indexing.
    assert [parse(r.data, media_type=JSON).text for r in split] == [
        "_id: 1\nname: Ada\nborn: 1815",
        "Alan",
        "name: Grace",
    ]
    (one,) = split_records(dumps(CRANES), media_type=JSON)
    assert (one.title, one.metadata) == ("Cranes", {"body": CRANES["body"], "year": 2021})
    with pytest.raises(ParseError, match="no JSON records"):
        split_upload(b"[]", media_type=JSON, records=True)


def test_jsonl_is_records_whatever_the_option() -> None:
    lines = b'{"title": "a"}\n{"title": "b"}\n'
    for records in (False, True):
        split = split_upload(lines, media_type=JSONL, records=records) or []
        assert [r.title for r in split] == ["a", "b"]


# Any JSON value: strings without surrogates (JSON cannot carry them as UTF-8), finite floats.
keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=30,
)


def reference_lines(value: Any, path: str | None = None) -> list[str]:
    """What flattening must give, written recursively (the parser walks its own stack)."""
    if isinstance(value, dict):
        return [
            line
            for key, child in value.items()
            for line in reference_lines(child, key if path is None else f"{path}.{key}")
        ]
    if isinstance(value, list):
        return [
            line
            for i, child in enumerate(value)
            for line in reference_lines(child, f"{path or ''}[{i}]")
        ]
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    leaf = value if isinstance(value, str) else json.dumps(value)
    return [leaf if path is None else f"{path}: {leaf}"]


def string_leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for child in value.values() for s in string_leaves(child)]
    if isinstance(value, list):
        return [s for child in value for s in string_leaves(child)]
    return [value] if isinstance(value, str) else []


@given(json_values)
def test_any_json_value_is_indexed_with_every_string_or_fails_for_holding_none(
    value: Any,
) -> None:
    data = dumps(value)
    split = split_upload(data, media_type=JSON)
    if split is not None:  # records: each is parsed alone, the text field its text
        assert len(split) == (len(value) if isinstance(value, list) else 1)
        return
    expected = normalise_text("\n".join(reference_lines(value)))
    if not expected.strip():
        with pytest.raises(ParseError, match="the JSON holds no text"):
            parse(data, media_type=JSON)
        return
    doc = parse(data, media_type=JSON)
    assert doc.text == expected
    for leaf in string_leaves(value):
        assert normalise_text(leaf).strip() in doc.text


def test_a_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    """JSON may escape half a UTF-16 pair, which no UTF-8 text or database takes."""
    whole = b'{"title": "x", "b\\udc00dy": ["a \\ud800 b", "\\ud83d\\ude00"]}'
    assert split_upload(whole, media_type=JSON) is None
    assert (
        parse(whole, media_type=JSON).text == "title: x\nb\ufffddy[0]: a \ufffd b\nb\ufffddy[1]: 😀"
    )
    (record,) = split_records(b'{"text": "a \\ud800", "m": {"k": "\\udfff"}}', media_type=JSON)
    assert record.metadata == {"m": {"k": "\ufffd"}}
    assert parse(record.data, media_type=JSON).text == "a \ufffd"
