"""The metadata filter language: JSON in, a typed expression out, checked against the fields a
namespace declares.

A filter is a JSON object, either a condition on one field or a combination::

    {"field": "year", "eq": 2012}
    {"field": "tag", "in": ["trial", "review"]}
    {"field": "published", "range": {"gte": "2020-01-01T00:00:00Z", "lt": "2021-01-01"}}
    {"field": "doi", "exists": true}
    {"and": [...]}, {"or": [...]}, {"not": {...}}

Only fields the namespace declares in ``indexed_fields`` may be named, and values must have the
declared type: ``keyword`` strings, ``integer`` integers, ``float`` numbers, ``bool`` booleans,
``datetime`` RFC 3339 strings (a date alone is midnight; no offset means UTC). ``range`` works on
``integer``, ``float`` and ``datetime`` fields. Every violation raises :class:`FilterError`
naming where it is (``filter.and[1].year``), which the API turns into a 422.

Matching follows Qdrant, which :func:`matches` restates in plain Python (the property tests
hold the stores to it):

- A field holding a list matches ``eq``, ``in`` and ``range`` when any element does; a
  document without the field matches none of them.
- ``exists`` is false for a missing field, ``null`` and ``[]``.
- ``not`` negates whatever it wraps: ``not eq`` also accepts documents without the field.
- Values of another type than the declared one (a string in an ``integer`` field) match
  nothing; uploads refuse such metadata, so only documents indexed before a field was
  declared can hold them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Nesting of and/or/not, and conditions in all, beyond which a filter is refused: enough for
# any hand-written filter, and a bound on the work one request can ask of the engine.
MAX_DEPTH = 8
MAX_CONDITIONS = 64
MAX_IN_VALUES = 256

RANGE_BOUNDS = ("gt", "gte", "lt", "lte")
_LEAF_OPERATORS = ("eq", "in", "range", "exists")
_NUMERIC = frozenset({"integer", "float"})

Scalar = str | int | float | bool

# Qdrant stores integers as int64.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class FilterError(ValueError):
    """A filter the namespace cannot run; ``field`` locates the culprit (``filter.and[0].year``)."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Eq:
    """``key`` equals ``value``; ``kind`` is the field's declared type."""

    key: str
    kind: str
    value: Scalar


@dataclass(frozen=True)
class In:
    """``key`` equals one of ``values`` (at least one)."""

    key: str
    kind: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    """``key`` lies within the bounds that are set (at least one).

    Numbers for ``integer``/``float`` fields; for ``datetime`` fields, RFC 3339 strings in UTC
    (``2020-01-01T00:00:00Z``), which both engines and :func:`matches` read as instants.
    """

    key: str
    kind: str
    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None


@dataclass(frozen=True)
class Exists:
    """``key`` holds a value (``present``) or is missing, null or ``[]`` (not ``present``)."""

    key: str
    present: bool


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr = Eq | In | Range | Exists | And | Or | Not


def parse_filter(raw: Any, fields: Mapping[str, str], *, key_prefix: str = "") -> Expr:
    """Validate the JSON filter ``raw`` against ``fields`` (name → declared type).

    Returned conditions name payload keys: ``key_prefix`` + field name (documents' metadata
    lives under ``metadata.`` in chunk payloads).

    Raises:
        FilterError: unknown field or operator, a value of the wrong type, an empty
            combination, or a filter deeper or larger than :data:`MAX_DEPTH` /
            :data:`MAX_CONDITIONS`.
    """
    parser = _Parser(fields, key_prefix)
    return parser.parse(raw, "filter", depth=1)


class _Parser:
    def __init__(self, fields: Mapping[str, str], key_prefix: str) -> None:
        self._fields = fields
        self._prefix = key_prefix
        self._conditions = 0

    def parse(self, raw: Any, where: str, *, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise FilterError(f"nested deeper than {MAX_DEPTH} levels", field=where)
        if not isinstance(raw, dict):
            raise FilterError("must be an object", field=where)
        combinators = [op for op in ("and", "or", "not") if op in raw]
        if combinators:
            if len(raw) != 1:
                raise FilterError(
                    f"{combinators[0]!r} must be the object's only key, got {sorted(raw)}",
                    field=where,
                )
            op = combinators[0]
            if op == "not":
                return Not(self.parse(raw["not"], f"{where}.not", depth=depth + 1))
            items = raw[op]
            if not isinstance(items, list) or not items:
                raise FilterError(f"{op!r} takes a non-empty list of filters", field=where)
            parsed = tuple(
                self.parse(item, f"{where}.{op}[{i}]", depth=depth + 1)
                for i, item in enumerate(items)
            )
            return And(parsed) if op == "and" else Or(parsed)
        return self._leaf(raw, where)

    def _leaf(self, raw: dict[str, Any], where: str) -> Expr:
        self._conditions += 1
        if self._conditions > MAX_CONDITIONS:
            raise FilterError(f"more than {MAX_CONDITIONS} conditions", field=where)
        name = raw.get("field")
        if not isinstance(name, str):
            raise FilterError(
                "a condition needs a string 'field' and one of "
                f"{list(_LEAF_OPERATORS)}, or use 'and', 'or', 'not'",
                field=where,
            )
        kind = self._fields.get(name)
        here = f"{where}.{name}"
        if kind is None:
            declared = sorted(self._fields) or "none"
            raise FilterError(
                f"field {name!r} is not declared in the namespace's indexed_fields "
                f"(declared: {declared})",
                field=here,
            )
        operators = [k for k in raw if k != "field"]
        if len(operators) != 1 or operators[0] not in _LEAF_OPERATORS:
            raise FilterError(
                f"a condition takes exactly one operator of {list(_LEAF_OPERATORS)}, "
                f"got {operators}",
                field=here,
            )
        op = operators[0]
        key = self._prefix + name
        value = raw[op]
        if op == "eq":
            return Eq(key, kind, _scalar(value, kind, here))
        if op == "in":
            if not isinstance(value, list) or not value or len(value) > MAX_IN_VALUES:
                raise FilterError(f"'in' takes a list of 1 to {MAX_IN_VALUES} values", field=here)
            return In(key, kind, tuple(dict.fromkeys(_scalar(v, kind, here) for v in value)))
        if op == "exists":
            if not isinstance(value, bool):
                raise FilterError("'exists' takes true or false", field=here)
            return Exists(key, value)
        return self._range(key, kind, value, here)

    def _range(self, key: str, kind: str, value: Any, here: str) -> Range:
        if kind not in _NUMERIC and kind != "datetime":
            raise FilterError(
                f"'range' needs an integer, float or datetime field; this one is {kind}",
                field=here,
            )
        if not isinstance(value, dict) or not value or set(value) - set(RANGE_BOUNDS):
            raise FilterError(
                f"'range' takes an object with some of {list(RANGE_BOUNDS)}", field=here
            )
        bound_kind = "float" if kind in _NUMERIC else "datetime"
        bounds = {b: _scalar(v, bound_kind, here) for b, v in value.items()}
        return Range(key, kind, **bounds)


def _scalar(value: Any, kind: str, where: str) -> Scalar:
    """``value`` checked against ``kind``; datetimes come back normalised to UTC RFC 3339."""
    if kind == "keyword" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise FilterError("integers must fit in 64 bits", field=where)
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)  # an integer beyond a double's range overflows
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise FilterError("numbers must be finite and within a double's range", field=where)
        return number
    if kind == "datetime" and isinstance(value, str):
        instant = parse_datetime(value)
        if instant is None:
            raise FilterError(
                f"{value!r} is not an RFC 3339 datetime (e.g. 2024-05-01T12:00:00Z)",
                field=where,
            )
        return format_datetime(instant)
    article = "an" if kind[0] in "aeiou" else "a"
    raise FilterError(f"expected {article} {kind} value, got {value!r}", field=where)


def normalise_metadata_value(value: Any, kind: str) -> Any:
    """A document's metadata ``value`` for a field declared ``kind``, checked and normalised.

    ``null``, a value of the type, or a list of them; datetimes become UTC RFC 3339, the form
    filters compare. Checked at upload, so a filter never meets a value it cannot compare.

    Raises:
        ValueError: the value or an element of the list has another type.
    """
    if value is None:
        return None
    try:
        if isinstance(value, list):
            return [_scalar(v, kind, "") for v in value]
        return _scalar(value, kind, "")
    except FilterError as exc:
        raise ValueError(str(exc).removeprefix(": ")) from exc


def parse_datetime(value: str) -> dt.datetime | None:
    """``value`` as an aware datetime (no offset: UTC), or None if it is not ISO 8601 or its
    UTC instant falls outside years 1 to 9999."""
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        instant = instant if instant.tzinfo else instant.replace(tzinfo=dt.UTC)
        instant.astimezone(dt.UTC)  # "9999-12-31T23:00-05:00" has no UTC instant
    except (ValueError, OverflowError):
        return None
    return instant


def format_datetime(instant: dt.datetime) -> str:
    """``instant`` in UTC as RFC 3339 with microseconds, the form sent to the engines."""
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def matches(expr: Expr, payload: Mapping[str, Any]) -> bool:
    """Whether a point with ``payload`` passes ``expr``, by the rules in the module docstring.

    The reference the engines are tested against; the query path never calls it.
    """
    if isinstance(expr, And):
        return all(matches(item, payload) for item in expr.items)
    if isinstance(expr, Or):
        return any(matches(item, payload) for item in expr.items)
    if isinstance(expr, Not):
        return not matches(expr.item, payload)
    value = _lookup(payload, expr.key)
    if isinstance(expr, Exists):
        present = value is not None and value != []
        return present == expr.present
    values = value if isinstance(value, list) else [] if value is None else [value]
    return any(_matches_value(expr, v) for v in values)


def _lookup(payload: Mapping[str, Any], key: str) -> Any:
    node: Any = payload
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _matches_value(expr: Eq | In | Range, value: Any) -> bool:
    if isinstance(expr, Eq):
        return _equal(expr.kind, value, expr.value)
    if isinstance(expr, In):
        return any(_equal(expr.kind, value, v) for v in expr.values)
    comparable = _comparable(expr.kind, value)
    if comparable is None:
        return False
    checks: Sequence[tuple[float | str | None, Any]] = (
        (expr.gt, lambda b: comparable > b),
        (expr.gte, lambda b: comparable >= b),
        (expr.lt, lambda b: comparable < b),
        (expr.lte, lambda b: comparable <= b),
    )
    return all(bound is None or check(_comparable(expr.kind, bound)) for bound, check in checks)


def _equal(kind: str, value: Any, wanted: Scalar) -> bool:
    if kind in ("float", "datetime"):
        return _comparable(kind, value) == _comparable(kind, wanted)
    return type(value) is type(wanted) and value == wanted


def _comparable(kind: str, value: Any) -> float | dt.datetime | None:
    if kind == "datetime":
        return parse_datetime(value) if isinstance(value, str) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
