"""``/console``: sign in with an API key (platform or tenant admin), sign out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.console.session import ConsoleSession, Sessions, csrf_matches
from app.console.web import (
    ConsoleRoute,
    FormDep,
    SignInRequired,
    render,
    see_other,
    sessions_of,
    signed_in,
)
from app.errors import AuthenticationError
from app.gateway.deps import SessionDep
from app.services import console_sessions, keys
from app.services.keys import ADMIN, Caller

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

ENDED = "Your session has ended: its key was revoked. Sign in with another key."


def home(caller: Caller) -> str:
    """Where a caller lands after sign-in."""
    return "/console/tenants" if caller.is_platform else "/console/namespaces"


@router.get("")
def sign_in_page(request: Request, db: SessionDep, ended: bool = False) -> Response:
    """The sign-in form, or the caller's home page when a session is open."""
    try:
        console = signed_in(request, db)
    except SignInRequired:
        pass
    else:
        return see_other(home(console.caller))
    session = sessions_of(request).read(request)
    if session is not None and session.key_id is None:  # keep its token: another tab's form
        return _form(request, session, notice=ENDED if ended else None)
    return _form(request, Sessions.start(None), notice=ENDED if ended else None, save=True)


@router.post("")
def sign_in(
    request: Request,
    db: SessionDep,
    api_key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Exchange an API key for a session; a bad key is an error on the same page (401)."""
    sessions = sessions_of(request)
    session = sessions.read(request)
    if session is None or not csrf_matches(session, csrf_token):
        # No cookie, an expired one, or a forged form: a fresh form, nothing checked.
        error = "The sign-in form expired. Enter the key again."
        return _form(request, Sessions.start(None), error=error, status_code=403, save=True)
    try:
        caller = keys.authenticate(db, api_key.strip())
    except AuthenticationError:
        error = "That API key is not valid, or it has been revoked."
        return _form(request, session, error=error, status_code=401)
    db.commit()
    if not (caller.is_platform or caller.has(ADMIN)):
        error = "The console needs a platform key or a tenant key with the admin scope."
        return _form(request, session, error=error, status_code=403)
    session_id = console_sessions.open_session(db, key_id=caller.key_id, ttl_s=sessions.ttl_s)
    response = see_other(home(caller))
    sessions.save(response, request, Sessions.start(caller.key_id, session_id))
    return response


@router.post("/sign-out")
def sign_out(request: Request, console: FormDep, db: SessionDep) -> Response:
    """End the session: its record goes (a copy of the cookie is refused from now on, on every
    replica), and the browser drops the cookie."""
    if console.session.session_id is not None:
        console_sessions.end_session(db, session_id=console.session.session_id)
    response = see_other("/console")
    Sessions.end(response, request)
    return response


def _form(
    request: Request,
    session: ConsoleSession,
    *,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
    save: bool = False,
) -> Response:
    page = render(
        request,
        "sign_in.html",
        status_code=status_code,
        csrf=session.csrf,
        error=error,
        notice=notice,
    )
    if save:
        sessions_of(request).save(page, request, session)
    return page
