"""The browser console at ``/console``: server-rendered pages (Jinja2, htmx vendored under
``static/``) over the same services, scopes and tenant isolation as the API.

Modules: :mod:`~app.console.session` (signed cookies, CSRF), :mod:`~app.console.web` (what every
page shares), then one per area: sign-in, namespaces and documents, questions, keys, platform.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.console import keys, namespaces, platform, questions, sign_in, usage
from app.console.web import HERE, ConsoleRoute, ConsoleState, not_found_page, see_other
from app.settings import Settings

_fallback = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


@_fallback.get("/{path:path}")
def unknown_page(request: Request, path: str) -> Response:
    if not path:  # /console/
        return see_other("/console")
    return not_found_page(request)


class _Static(StaticFiles):
    """The console's own files (htmx, CSS, JS); ``nosniff`` so none runs as another type."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console on ``app`` (unless ``SHOAL_CONSOLE__ENABLED`` is off)."""
    if not settings.console.enabled:
        return
    app.state.console = ConsoleState(settings)
    app.mount("/console/static", _Static(directory=HERE / "static"), name="console-static")
    for module in (sign_in, namespaces, questions, keys, usage, platform):
        app.include_router(module.router)
    app.include_router(_fallback)  # last: any other /console path is an HTML 404
