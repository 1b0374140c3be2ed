"""One model of the search options, with one set of defaults wherever they surface: the
server's settings, a namespace's stored settings (and so the OpenAPI schema), the store's
search request and the README's settings table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.main import create_app
from app.schemas.namespaces import SearchSettings
from app.settings import RetrievalConfig, Settings
from retrieval.config import SearchOptions
from retrieval.stores.base import SearchRequest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_servers_settings_are_the_options_with_the_same_defaults() -> None:
    defaults = SearchOptions()
    settings = RetrievalConfig()
    for name in SearchOptions.model_fields:
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.search_options() == defaults


def test_a_namespaces_settings_are_the_options_each_optional_with_the_same_bounds() -> None:
    assert set(SearchSettings.model_fields) == set(SearchOptions.model_fields)
    for name, field in SearchSettings.model_fields.items():
        assert field.default is None, name
        assert field.metadata == SearchOptions.model_fields[name].metadata, name


def test_the_store_request_fuses_as_the_options_do() -> None:
    request_defaults = {f.name: f.default for f in dataclasses.fields(SearchRequest)}
    defaults = SearchOptions()
    for name in ("candidates", "fusion", "rrf_k", "dense_weight", "lexical_weight"):
        assert request_defaults[name] == getattr(defaults, name), name


def test_the_openapi_schema_shows_no_other_default(tmp_path: Path) -> None:
    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    shown = {
        (model, prop): spec["default"]
        for model, body in schema["components"]["schemas"].items()
        for prop, spec in body.get("properties", {}).items()
        if prop in SearchOptions.model_fields and "default" in spec
    }
    defaults = SearchOptions()
    for (model, prop), value in shown.items():
        assert value in (None, getattr(defaults, prop)), (model, prop, value)


def test_the_readme_states_the_same_defaults() -> None:
    table = dict(
        re.findall(r"^\| `SHOAL_RETRIEVAL__([A-Z_]+)` \| `([^`]+)`", README.read_text(), re.M)
    )
    defaults = SearchOptions()
    for name in (
        "mode",
        "candidates",
        "fusion",
        "rrf_k",
        "dense_weight",
        "lexical_weight",
        "rerank",
    ):
        value = getattr(defaults, name)
        assert table[name.upper()] == (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
