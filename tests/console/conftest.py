"""A console user as a test sees one: an HTTP client that keeps the session cookie, reads the
forms' CSRF token from the last page, and signs in with a key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from fastapi.testclient import TestClient
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from app.console.session import COOKIE
from tests.api.conftest import Response


class Page(Response, Protocol):
    """A response as tests read it, with the URL it ended at (after redirects)."""

    @property
    def url(self) -> Any: ...  # Any: httpx.URL or httpx2.URL, as the client is built


@dataclass
class Browser:
    """A client on the console (TestClient in process, or httpx on ``shoal serve``), with the
    CSRF token of the last page it read."""

    client: TestClient | httpx.Client
    csrf: str | None = None
    pages: list[str] = field(default_factory=list)

    def get(self, path: str, **kwargs: Any) -> Page:
        response = self.client.get(path, **kwargs)
        self._remember(response)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Page:
        """POST a form with the session's CSRF token (unless ``data`` names its own)."""
        form = {"csrf_token": self.csrf or "", **(data or {})}
        response = self.client.post(path, data=form, **kwargs)
        self._remember(response)
        return response

    def sign_in(self, key: str) -> Page:
        self.get("/console")
        response = self.post("/console", {"api_key": key})
        assert response.status_code == 200, response.text
        assert response.url.path != "/console", "still on the sign-in page"
        return response

    @property
    def cookie(self) -> str | None:
        value: str | None = self.client.cookies.get(COOKIE)
        return value

    def _remember(self, response: Page) -> None:
        self.pages.append(response.text)
        token = HTMLParser(response.text).css_first("input[name=csrf_token]")
        if token is not None:
            self.csrf = token.attributes.get("value")


def texts(html: str, selector: str) -> list[str]:
    """The text of each element ``selector`` finds in ``html``."""
    return [node.text(strip=True) for node in HTMLParser(html).css(selector)]
