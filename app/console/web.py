"""What every console page shares: templates, the signed-in caller, CSRF checks, HTML errors and
the security headers.

Pages call the same services as the API with the same :class:`~app.services.keys.Caller`, so
scopes and tenant isolation are the API's: a foreign namespace, document, job or key raises the
service's ``NotFoundError``, shown here as a 404 page. Errors become HTML (the API's are
problem+json), with the status :func:`app.gateway.problems.problem_for` gives them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
import structlog
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from app.console.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    ConsoleSession,
    Sessions,
    csrf_matches,
    load_secret,
)
from app.errors import AuthenticationError
from app.gateway.deps import SessionDep
from app.gateway.problems import INTERNAL, NOT_FOUND, VALIDATION, ProblemType, problem_for
from app.services import console_sessions, keys
from app.services.keys import Caller
from app.settings import Settings

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
# No inline script or style anywhere: htmx's settings come from a <meta> tag (base.html).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show tenants' data, and once a key's secret: no cache keeps them.
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
    )
)


class ConsoleState:
    """The console's per-app state: the session signer, made on first use (so building an app
    writes nothing to the data directory)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def sessions(self) -> Sessions:
        config = self.settings.console
        secret = load_secret(config, self.settings.data_dir)
        return Sessions(secret, ttl_s=config.session_ttl_s)


def sessions_of(request: Request) -> Sessions:
    state: ConsoleState = request.app.state.console
    return state.sessions


class SignInRequired(Exception):  # noqa: N818  # a redirect, not an error
    """Raised when a page needs a signed-in key: none, an expired session, or a revoked key."""

    def __init__(self, *, ended: bool = False) -> None:
        self.ended = ended  # the key was revoked: say so on the sign-in page


class CsrfError(Exception):
    """Raised when a state-changing request's CSRF token is missing or not its session's."""


@dataclass(frozen=True)
class Console:
    """The signed-in caller, and the session whose CSRF token its forms carry."""

    caller: Caller
    session: ConsoleSession

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def is_platform(self) -> bool:
        return self.caller.is_platform


def signed_in(request: Request, db: SessionDep) -> Console:
    """The caller of the session's key, looked up again now: the session must still be open
    (sign-out ends it on the server) and its key unrevoked.

    Raises:
        SignInRequired: no session, an expired or forged one, one signed out, or its key is
            revoked.
    """
    session = sessions_of(request).read(request)
    if session is None or session.key_id is None or session.session_id is None:
        raise SignInRequired
    if not console_sessions.is_open(db, session_id=session.session_id, key_id=session.key_id):
        db.commit()
        raise SignInRequired
    try:
        caller = keys.authenticate_key_id(db, session.key_id)
    except AuthenticationError:
        raise SignInRequired(ended=True) from None
    db.commit()  # end the lookup's transaction (on SQLite it holds the write lock)
    request.state.key_id, request.state.tenant_id = caller.key_id, caller.tenant_id
    console = Console(caller=caller, session=session)
    request.state.console = console
    return console


ConsoleDep = Annotated[Console, Depends(signed_in)]


async def checked_form(request: Request, console: ConsoleDep) -> Console:
    """:func:`signed_in`, for a state-changing request: its CSRF token must be the session's.

    Raises:
        CsrfError: the token is missing or another.
    """
    presented: object = request.headers.get(CSRF_HEADER)
    if presented is None:
        presented = (await request.form()).get(CSRF_FIELD)
    if not csrf_matches(console.session, presented):
        raise CsrfError
    return console


FormDep = Annotated[Console, Depends(checked_form)]


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(request: Request, name: str, *, status_code: int = 200, **context: Any) -> Response:
    """``name`` rendered with ``context``, the signed-in caller (``me``, None on the sign-in
    page) and ``error``/``notice`` (None unless given)."""
    # Any: template context values are whatever the page shows
    context.setdefault("me", getattr(request.state, "console", None))
    context.setdefault("error", None)
    context.setdefault("notice", None)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def see_other(url: str) -> Response:
    """Where a form's POST leads (303: the browser follows with a GET)."""
    return RedirectResponse(url, status_code=303)


def form_error(exc: ValidationError | RequestValidationError) -> str:
    """A schema's complaint about a form, in one line: ``field: message``."""
    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))


def error_status(exc: Exception) -> tuple[int, str]:
    """The status and message to show for a service error (its API status)."""
    problem = problem_for(exc) or INTERNAL
    # 5xx details may carry SQL or the store's internal names (see app.gateway.problems).
    return problem.status, str(exc) if problem.status < 500 else problem.title


def _error_page(request: Request, problem: ProblemType, detail: str) -> Response:
    return render(
        request,
        "error.html",
        status_code=problem.status,
        title=problem.title,
        detail=detail,
    )


def _sign_in_again(request: Request, exc: SignInRequired) -> Response:
    url = "/console?ended=1" if exc.ended else "/console"
    # htmx follows a redirect inside the fragment; HX-Redirect makes the whole page go.
    response: Response = (
        Response(headers={"HX-Redirect": url}) if is_htmx(request) else see_other(url)
    )
    if exc.ended:
        Sessions.end(response, request)
    return response


class ConsoleRoute(APIRoute):
    """A console route: errors become HTML pages (a sign-in redirect when the session is gone),
    and every response carries :data:`SECURITY_HEADERS`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                response = _sign_in_again(request, exc)
            except CsrfError:
                forbidden = ProblemType(403, "csrf", "The form has expired")
                detail = "Reload the page and submit the form again."
                response = _error_page(request, forbidden, detail)
            except RequestValidationError as exc:  # a query parameter out of range
                response = _error_page(request, VALIDATION, form_error(exc))
            except StarletteHTTPException as exc:  # a body that cannot be read at all
                refused = ProblemType(exc.status_code, "http-error", "The request was refused")
                response = _error_page(request, refused, str(exc.detail))
            except Exception as exc:
                problem = problem_for(exc)
                if problem is None:
                    log.error("unhandled_error", exc_info=exc, path=request.url.path)
                response = _error_page(request, problem or INTERNAL, error_status(exc)[1])
            response.headers.update(SECURITY_HEADERS)
            return response

        return console_handler


def not_found_page(request: Request) -> Response:
    response = _error_page(request, NOT_FOUND, f"no console page at {request.url.path}")
    response.headers.update(SECURITY_HEADERS)
    return response
