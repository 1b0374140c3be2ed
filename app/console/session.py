"""Console sessions: a signed, expiring cookie that names the API key signed in, the session's
server-side record, and the CSRF token of the forms it may submit.

The cookie holds the key's id, never its secret, and the id of the session's row in the
database (:mod:`app.services.console_sessions`); it is signed (itsdangerous, HMAC-SHA1 over a
key derived from the console secret) with its issue time, so it cannot be forged or extended.
On every request the row must still be open (sign-out deletes it: a copy of the cookie is then
worth nothing, on every replica) and the key is looked up again
(:func:`app.services.keys.authenticate_key_id`): a revoked key ends its sessions at their next
request. Before sign-in the same cookie carries a CSRF token only, so the sign-in form is
protected too.

CSRF: each form carries the session's token in a hidden field (htmx requests may send it as the
``X-CSRF-Token`` header); a state-changing request whose token differs from its cookie's is
refused. The cookie is ``HttpOnly`` and ``SameSite=Strict``, ``Secure`` over HTTPS.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from app.config import ConsoleConfig

COOKIE = "shoal_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SECRET_FILE = "console-secret"  # noqa: S105  # a file name, not a secret
_SALT = "shoal.console.session"


@dataclass(frozen=True)
class ConsoleSession:
    """What a console cookie says: the key signed in and its session's id (both None before
    sign-in), and the CSRF token."""

    key_id: str | None
    csrf: str
    session_id: str | None = None


def load_secret(config: ConsoleConfig, data_dir: Path) -> str:
    """The signing secret: ``SHOAL_CONSOLE__SECRET``, else ``<data_dir>/console-secret``,
    created (mode 0600) on first use so that ``make run`` needs no setting and sessions survive
    a restart."""
    if config.secret is not None:
        return config.secret.get_secret_value()
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made by an earlier start, or a process starting beside this one
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        secret = secrets.token_urlsafe(48)
        out.write(secret)
    return secret


class Sessions:
    """Issues and reads console cookies for one secret and lifetime."""

    def __init__(self, secret: str, *, ttl_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.ttl_s = ttl_s

    def read(self, request: Request) -> ConsoleSession | None:
        """The request's session, or None when it has none, or a forged or expired one."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=self.ttl_s)
        except BadSignature:  # SignatureExpired too
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        key_id, session_id = data.get("key"), data.get("sid")
        if not (isinstance(key_id, str) and isinstance(session_id, str)):
            key_id = session_id = None  # before sign-in (or a cookie from before sessions)
        return ConsoleSession(key_id=key_id, csrf=data["csrf"], session_id=session_id)

    @staticmethod
    def start(key_id: str | None = None, session_id: str | None = None) -> ConsoleSession:
        """A new session (of ``key_id``, whose record is ``session_id``; none before sign-in)
        with a fresh CSRF token (a sign-in rotates it, so a token seen before sign-in is worth
        nothing after)."""
        return ConsoleSession(key_id=key_id, csrf=secrets.token_urlsafe(32), session_id=session_id)

    def save(self, response: Response, request: Request, session: ConsoleSession) -> None:
        """Set ``session``'s signed cookie on ``response``."""
        value = self._serializer.dumps(
            {"key": session.key_id, "sid": session.session_id, "csrf": session.csrf}
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.ttl_s,
            path="/console",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def end(response: Response, request: Request) -> None:
        """Remove the session cookie from the browser."""
        response.delete_cookie(
            COOKIE,
            path="/console",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )


def csrf_matches(session: ConsoleSession, presented: object) -> bool:
    """Whether ``presented`` (a form field or header) is the session's token."""
    return isinstance(presented, str) and hmac.compare_digest(presented, session.csrf)
