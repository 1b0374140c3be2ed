"""The README stays true: every setting, problem type, route and CLI command is documented."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.gateway.problems import ALL_PROBLEMS
from app.main import create_app
from app.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def setting_names(model: type[BaseModel], prefix: str = "SHOAL_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += setting_names(kind, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_readme() -> None:
    missing = [n for n in setting_names(Settings) if f"`{n}`" not in README]
    assert missing == []


def test_every_problem_type_is_in_the_readme() -> None:
    missing = [p.uri for p in ALL_PROBLEMS if f"`{p.uri}`" not in README]
    assert missing == []


def test_every_route_is_in_the_readme() -> None:
    app = create_app(Settings())
    routes = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith(("/v1", "/healthz", "/readyz"))
        for method in (route.methods or set()) - {"HEAD", "OPTIONS"}
    ]
    missing = [f"{m} {p}" for m, p in routes if f"{m} {p}" not in README]
    assert missing == []


def test_the_first_screen_shows_make_run_and_make_test() -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert "make run" in first_screen
    assert "make test" in first_screen
