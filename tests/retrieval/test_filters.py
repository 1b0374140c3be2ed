"""Parsing and checking filters: every mistake is a FilterError that says where it is."""

from __future__ import annotations

from typing import Any

import pytest

from retrieval.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    And,
    Eq,
    Exists,
    FilterError,
    In,
    Not,
    Or,
    Range,
    matches,
    parse_filter,
)

FIELDS = {"kind": "keyword", "year": "integer", "score": "float", "open": "bool"}
FIELDS |= {"published": "datetime"}


def test_a_valid_filter_parses_into_payload_keys() -> None:
    raw = {
        "and": [
            {"field": "kind", "in": ["trial", "review", "trial"]},
            {"not": {"field": "year", "range": {"gte": 2010, "lt": 2020}}},
            {"or": [{"field": "open", "eq": True}, {"field": "score", "exists": False}]},
            {"field": "published", "range": {"gte": "2020-01-01"}},
            {"field": "score", "eq": 1},
        ]
    }

    expr = parse_filter(raw, FIELDS, key_prefix="metadata.")

    assert expr == And(
        (
            In("metadata.kind", "keyword", ("trial", "review")),
            Not(Range("metadata.year", "integer", gte=2010.0, lt=2020.0)),
            Or((Eq("metadata.open", "bool", True), Exists("metadata.score", present=False))),
            Range("metadata.published", "datetime", gte="2020-01-01T00:00:00.000000Z"),
            Eq("metadata.score", "float", 1.0),
        )
    )


def test_datetimes_are_normalised_to_utc() -> None:
    expr = parse_filter({"field": "published", "eq": "2020-01-01T02:30:00+02:00"}, FIELDS)
    assert expr == Eq("published", "datetime", "2020-01-01T00:30:00.000000Z")


def nested(depth: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"field": "kind", "eq": "x"}
    for _ in range(depth - 1):
        raw = {"not": raw}
    return raw


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"field": "colour", "eq": "red"}, "filter.colour", "not declared"),
        ({"field": "year", "eq": "2012"}, "filter.year", "expected an integer"),
        ({"field": "year", "eq": True}, "filter.year", "expected an integer"),
        ({"field": "open", "eq": 1}, "filter.open", "expected a bool"),
        ({"field": "score", "eq": "high"}, "filter.score", "expected a float"),
        ({"field": "kind", "like": "x"}, "filter.kind", "exactly one operator"),
        ({"field": "kind", "eq": "x", "in": ["x"]}, "filter.kind", "exactly one operator"),
        ({"field": "kind", "range": {"gt": "a"}}, "filter.kind", "'range' needs"),
        ({"field": "year", "range": {}}, "filter.year", "'range' takes"),
        ({"field": "year", "range": {"above": 3}}, "filter.year", "'range' takes"),
        ({"field": "year", "in": []}, "filter.year", "'in' takes"),
        ({"field": "year", "exists": "yes"}, "filter.year", "'exists' takes"),
        ({"field": "published", "eq": "last week"}, "filter.published", "RFC 3339"),
        ({"field": "published", "eq": "9999-12-31T23:59:59-01:00"}, "filter.published", "RFC"),
        ({"field": "published", "eq": "0001-01-01T00:00:00+01:00"}, "filter.published", "RFC"),
        ({"field": "score", "eq": 10**400}, "filter.score", "finite"),
        ({"field": "year", "range": {"gt": 10**400}}, "filter.year", "finite"),
        ({"field": "year", "eq": 2**63}, "filter.year", "64 bits"),
        ({"field": "year", "in": [1, -(2**63) - 1]}, "filter.year", "64 bits"),
        ({"and": []}, "filter", "non-empty list"),
        ({"or": {"field": "kind", "eq": "x"}}, "filter", "non-empty list"),
        ({"and": [{"field": "kind", "eq": "x"}], "field": "kind"}, "filter", "only key"),
        ({"and": [{"field": "kind", "eq": "x"}, {"year": 3}]}, "filter.and[1]", "needs a"),
        ({"not": {"or": [{"field": "nope", "eq": 1}]}}, "filter.not.or[0].nope", "not declared"),
        ([{"field": "kind", "eq": "x"}], "filter", "must be an object"),
        (nested(MAX_DEPTH + 1), "filter" + ".not" * MAX_DEPTH, "deeper than"),
        (
            {"or": [{"field": "kind", "eq": str(i)} for i in range(MAX_CONDITIONS + 1)]},
            f"filter.or[{MAX_CONDITIONS}]",
            "more than",
        ),
    ],
)
def test_a_bad_filter_names_where_it_is(raw: Any, field: str, message: str) -> None:
    with pytest.raises(FilterError, match=message) as caught:
        parse_filter(raw, FIELDS)
    assert caught.value.field == field


def test_the_deepest_allowed_filter_parses() -> None:
    assert parse_filter(nested(MAX_DEPTH), FIELDS) is not None


@pytest.mark.parametrize(
    ("raw", "payload", "expected"),
    [
        ({"field": "kind", "eq": "x"}, {"kind": ["y", "x"]}, True),  # any element of a list
        ({"field": "kind", "eq": "x"}, {}, False),
        ({"not": {"field": "kind", "eq": "x"}}, {}, True),  # not also takes the missing
        ({"field": "kind", "exists": False}, {"kind": None}, True),
        ({"field": "kind", "exists": False}, {"kind": []}, True),
        ({"field": "kind", "exists": True}, {"kind": ""}, True),
        ({"field": "year", "eq": 3}, {"year": True}, False),  # a bool is no integer
        ({"field": "year", "range": {"gt": 2}}, {"year": "5"}, False),  # nor is a string
        ({"field": "score", "eq": 2}, {"score": 2}, True),  # float fields compare numbers
        (
            {"field": "published", "range": {"lt": "2020-01-01T01:00:00+01:00"}},
            {"published": "2019-12-31T23:59:00Z"},
            True,
        ),
    ],
)
def test_matches_follows_the_documented_semantics(
    raw: dict[str, Any], payload: dict[str, Any], expected: bool
) -> None:
    assert matches(parse_filter(raw, FIELDS), payload) is expected
