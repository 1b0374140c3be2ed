"""The console's guarantees, through the app in process (TestClient): sessions, CSRF, the
security headers, escaping and tenant isolation. tests/console/test_browser.py drives the same
pages in a real browser over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from app.config import ConsoleConfig
from app.console.session import COOKIE, SECRET_FILE
from app.console.web import CSP
from app.main import create_app
from tests.api.conftest import Tenant, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api
from tests.console.conftest import Browser, texts

HOSTILE_NAME = '<script>window.pwned=1</script>" onmouseover="window.pwned=2.txt'
HOSTILE_TEXT = (
    'Otters <script>window.pwned=3</script> float on their backs " onmouseover="window.pwned=4" '
    "while they sleep in kelp beds."
)


@pytest.fixture
def browser(api: Api) -> Browser:
    return Browser(api.client)


@pytest.fixture
def acme(api: Api) -> Tenant:
    return make_tenant(api, "acme")


def test_sign_in_page_has_the_contract_form_and_strict_headers(browser: Browser) -> None:
    page = browser.get("/console")
    assert page.status_code == 200
    html = HTMLParser(page.text)
    assert html.css_first("input#api-key") is not None
    assert texts(page.text, "label[for=api-key]") == ["API key"]
    assert [b.text(strip=True) for b in html.css("button")] == ["Sign in"]
    assert page.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP
    assert "script-src 'self'" in CSP
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # No inline script or handler anywhere: every script is a file of ours.
    sources = [s.attributes.get("src") or "" for s in html.css("script")]
    assert sources == ["/console/static/htmx.min.js", "/console/static/console.js"]
    assert not [n for n in html.css("*") if any(a.startswith("on") for a in n.attributes)]
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over HTTPS it is (next test)


def test_the_session_cookie_is_secure_over_https(api: Api, acme: Tenant) -> None:
    secure = Browser(TestClient(api.client.app, base_url="https://testserver"))
    secure.get("/console")
    response = secure.post("/console", {"api_key": acme.admin_key}, follow_redirects=False)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]
    assert "HttpOnly" in response.headers["set-cookie"]


def test_a_bad_key_is_an_error_on_the_same_page(browser: Browser, acme: Tenant) -> None:
    browser.get("/console")
    for key in ("not-a-key", acme.admin_key + "x"):
        page = browser.post("/console", {"api_key": key})
        assert page.status_code == 401
        assert page.url.path == "/console"
        assert texts(page.text, "[role=alert]") == [
            "That API key is not valid, or it has been revoked."
        ]
    assert browser.get("/console/namespaces").url.path == "/console"  # no session came of it


def test_keys_without_admin_scope_cannot_sign_in(browser: Browser, acme: Tenant) -> None:
    browser.get("/console")
    for key in (acme.write_key, acme.query_key):
        page = browser.post("/console", {"api_key": key})
        assert page.status_code == 403
        assert "admin scope" in page.text
    assert browser.get("/console/namespaces").url.path == "/console"


def test_sign_in_needs_the_forms_token(browser: Browser, acme: Tenant) -> None:
    """Login CSRF: a forged sign-in (no token, or another's) signs nobody in."""
    browser.get("/console")
    for token in ("", "forged"):
        page = browser.post("/console", {"api_key": acme.admin_key, "csrf_token": token})
        assert page.status_code == 403
    assert browser.get("/console/namespaces").url.path == "/console"


def test_state_changing_forms_need_the_sessions_token(api: Api, acme: Tenant) -> None:
    alice, mallory = Browser(api.client), Browser(TestClient(api.client.app))
    mallory.sign_in(acme.admin_key)
    alice.sign_in(acme.admin_key)
    for token in ("", "forged", mallory.csrf):  # another session's token is worth nothing here
        refused = alice.post("/console/namespaces", {"name": "docs", "csrf_token": token})
        assert refused.status_code == 403
        assert "The form has expired" in refused.text
        refused = alice.post("/console/sign-out", {"csrf_token": token})
        assert refused.status_code == 403
    listed = api.client.get("/v1/namespaces", headers=api.headers(acme.admin_key)).json()
    assert listed == []
    assert alice.get("/console/namespaces").url.path == "/console/namespaces"  # still signed in
    created = alice.post("/console/namespaces", {"name": "docs"})
    assert created.url.path == "/console/namespaces/docs"


def test_sign_out_ends_the_session(api: Api, browser: Browser, acme: Tenant) -> None:
    browser.sign_in(acme.admin_key)
    signed_in = browser.cookie
    response = browser.post("/console/sign-out", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert browser.cookie is None
    assert browser.get("/console/namespaces").url.path == "/console"
    # A copy of the cookie kept from before (stolen, or another tab) is refused too: sign-out
    # ended the session on the server, and another app on the same database (a replica) agrees.
    assert signed_in is not None
    copy = TestClient(api.client.app)
    copy.cookies.set(COOKIE, signed_in, path="/console")
    assert copy.get("/console/namespaces").url.path == "/console"
    with TestClient(create_app(api.platform.settings, platform=api.platform)) as replica:
        replica.cookies.set(COOKIE, signed_in, path="/console")
        assert replica.get("/console/namespaces").url.path == "/console"


def test_each_sign_in_is_its_own_session(api: Api, acme: Tenant) -> None:
    """Signing out in one browser leaves the same key's session in another open."""
    first, second = Browser(TestClient(api.client.app)), Browser(TestClient(api.client.app))
    first.sign_in(acme.admin_key)
    second.sign_in(acme.admin_key)
    first.post("/console/sign-out")
    assert first.get("/console/namespaces").url.path == "/console"
    assert second.get("/console/namespaces").url.path == "/console/namespaces"


def test_a_revoked_key_ends_its_sessions_at_the_next_request(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    browser.sign_in(acme.admin_key)
    key_id = acme.admin_key.split("_")[1]
    revoked = api.client.delete(f"/v1/admin/keys/{key_id}", headers=api.headers())
    assert revoked.status_code == 204
    page = browser.get("/console/namespaces")
    assert page.url.path == "/console"
    assert page.url.query == b"ended=1"
    assert "Your session has ended" in page.text
    assert browser.get("/console/namespaces").url.path == "/console"


def test_forged_and_expired_sessions_are_refused(api: Api, browser: Browser, acme: Tenant) -> None:
    browser.sign_in(acme.admin_key)
    data_dir = api.platform.settings.data_dir
    secret = (data_dir / SECRET_FILE).read_text()
    serializer = URLSafeTimedSerializer(secret, salt="shoal.console.session")
    session_id = serializer.loads(browser.cookie or "")["sid"]  # the session signed in
    payload = {"key": acme.admin_key.split("_")[1], "sid": session_id, "csrf": "x"}
    forged = URLSafeTimedSerializer("another secret", salt="shoal.console.session").dumps(payload)
    old = _signed_at(secret, payload, int(time.time()) - 24 * 3600)  # the TTL is 8 hours
    fresh = _signed_at(secret, payload, int(time.time()))
    # A session id that was never opened, or one of another key: no row, no session.
    unknown = _signed_at(secret, {**payload, "sid": "made-up"}, int(time.time()))
    other_key = _signed_at(
        secret, {**payload, "key": acme.write_key.split("_")[1]}, int(time.time())
    )
    cases = ((forged, False), (old, False), (unknown, False), (other_key, False), (fresh, True))
    for value, accepted in cases:
        client = TestClient(api.client.app)
        client.cookies.set(COOKIE, value, path="/console")
        page = client.get("/console/namespaces")
        assert (page.url.path == "/console/namespaces") is accepted, value


def _signed_at(secret: str, payload: dict[str, str], when: int) -> str:
    """``payload`` signed as the console signs it, with the issue time ``when``."""

    class At(TimestampSigner):
        def get_timestamp(self) -> int:
            return when

    serializer = URLSafeTimedSerializer(secret, salt="shoal.console.session", signer=At)
    return serializer.dumps(payload)


def test_the_secret_is_generated_once_into_the_data_dir(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    browser.sign_in(acme.admin_key)
    path = api.platform.settings.data_dir / SECRET_FILE
    assert len(path.read_text()) >= 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    # Another app on the same data dir (a restart) takes the cookie; one with another secret not.
    for config, accepted in ((ConsoleConfig(), True), (ConsoleConfig(secret="s" * 40), False)):
        settings = api.platform.settings.model_copy(update={"console": config})
        with TestClient(create_app(settings, platform=api.platform)) as client:
            client.cookies.set(COOKIE, browser.cookie or "", path="/console")
            page = client.get("/console/namespaces")
        assert (page.url.path == "/console/namespaces") is accepted


def test_user_text_is_escaped(api: Api, browser: Browser, acme: Tenant) -> None:
    make_namespace(api, acme)
    job = upload(api, acme, "docs", [{"text": HOSTILE_TEXT, "filename": HOSTILE_NAME}])
    wait_for_job(api, acme, job["job_id"])
    browser.sign_in(acme.admin_key)
    page = browser.get("/console/namespaces/docs")
    assert HOSTILE_NAME not in page.text  # never raw
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&#34; onmouseover=&#34;" in page.text
    assert texts(page.text, "td.name") == [HOSTILE_NAME]
    answer = browser.post("/console/namespaces/docs/ask", {"question": "How do otters sleep?"})
    assert answer.status_code == 200
    assert "<script>window.pwned" not in answer.text
    assert 'onmouseover="window' not in answer.text
    assert texts(answer.text, ".citation-file") == [HOSTILE_NAME]
    quoted = texts(answer.text, "ol.citations blockquote")
    assert any("<script>window.pwned=3</script>" in q for q in quoted)
    html = HTMLParser(answer.text)
    assert not [n for n in html.css("*") if "onmouseover" in n.attributes]
    assert all("pwned" not in (s.text() or "") for s in html.css("script"))

    streamed = browser.post("/console/namespaces/docs/ask/stream", {"question": "Otters?"})
    panel = dict(events(streamed.text))["outcome"]["html"]
    assert "<script>window.pwned" not in panel
    assert texts(panel, ".citation-file") == [HOSTILE_NAME]


def events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The (name, data) of each Server-Sent Event in ``body``."""
    found = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_the_ask_page_streams_the_answer_then_its_panel(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    make_namespace(api, acme, "docs")
    text = "Sea otters hold hands while they sleep. Otters eat sea urchins."
    job = upload(api, acme, "docs", [{"text": text, "filename": "otters.txt"}])
    wait_for_job(api, acme, job["job_id"])
    browser.sign_in(acme.admin_key)
    page = browser.get("/console/namespaces/docs/ask")
    assert HTMLParser(page.text).css_first("form[data-stream]") is not None
    streamed = browser.post(
        "/console/namespaces/docs/ask/stream",
        {"question": "What do otters do while they sleep?", "max_tokens": "64"},
    )
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["content-security-policy"] == CSP
    got = events(streamed.text)
    names = [name for name, _ in got]
    assert names[0] == "route"
    assert names[-1] == "outcome"
    assert set(names[1:-1]) == {"token"}
    assert got[0][1]["name"] == "extractive"
    streamed_text = "".join(data["text"] for name, data in got if name == "token")
    assert "hold hands" in streamed_text
    panel = got[-1][1]["html"]
    assert texts(panel, ".answer") == [streamed_text.strip()]
    assert set(texts(panel, ".citation-file")) == {"otters.txt"}
    assert "total" in texts(panel, "dl.facts dt")

    # Refused before any text: the panel at once, with the API's status and rule.
    refused = browser.post(
        "/console/namespaces/docs/ask/stream", {"question": "Otters?", "temperature": "5"}
    )
    assert refused.status_code == 422
    assert texts(refused.text, "[role=alert]") == [
        "temperature: Input should be less than or equal to 2"
    ]
    # Search only: the passages panel at once.
    found = browser.post(
        "/console/namespaces/docs/ask/stream", {"question": "Otters?", "search_only": "1"}
    )
    assert found.status_code == 200
    assert texts(found.text, "#outcome-title") == ["Passages"]
    # The stream is a state-changing form too: no token, no answer.
    forged = browser.post(
        "/console/namespaces/docs/ask/stream", {"question": "Otters?", "csrf_token": "forged"}
    )
    assert forged.status_code == 403


@pytest.fixture
def two_tenants(api: Api) -> tuple[Tenant, Tenant, dict[str, str]]:
    """acme, and globex with a namespace, a document, a job and keys acme must never reach."""
    acme, globex = make_tenant(api, "acme"), make_tenant(api, "globex")
    make_namespace(api, acme, "docs")
    make_namespace(api, globex, "secret-plans")
    make_namespace(api, globex, "docs")
    job = upload(
        api, globex, "docs", [{"text": "Globex plans a volcano lair.", "filename": "p.txt"}]
    )
    wait_for_job(api, globex, job["job_id"])
    ids = {
        "job": job["job_id"],
        "document": job["documents"][0]["id"],
        "key": globex.query_key.split("_")[1],
    }
    return acme, globex, ids


def test_another_tenants_pages_are_404(
    api: Api, browser: Browser, two_tenants: tuple[Tenant, Tenant, dict[str, str]]
) -> None:
    acme, globex, ids = two_tenants
    browser.sign_in(acme.admin_key)
    for path in (
        "/console/namespaces/secret-plans",
        "/console/namespaces/secret-plans/ask",
        "/console/namespaces/secret-plans/delete",
        f"/console/jobs/{ids['job']}",
        f"/console/tenants/{globex.id}",
    ):
        page = browser.get(path)
        assert page.status_code == 404, path
        assert "Not found" in page.text
        assert "secret-plans" not in texts(page.text, "h1")
    for path, form in (
        ("/console/namespaces/secret-plans/ask", {"question": "lair?"}),
        ("/console/namespaces/secret-plans/delete", {"confirm": "secret-plans"}),
        (f"/console/namespaces/docs/documents/{ids['document']}/delete", {}),
        (f"/console/keys/{ids['key']}/revoke", {}),
        (f"/console/tenants/{globex.id}/keys", {"name": "mine", "scopes": ["admin"]}),
    ):
        page = browser.post(path, form)
        assert page.status_code == 404, path
    # Globex is untouched: its namespace, document and key all still work.
    headers = api.headers(globex.query_key)
    assert api.client.get("/v1/namespaces/secret-plans", headers=headers).status_code == 200
    document = api.client.get(f"/v1/namespaces/docs/documents/{ids['document']}", headers=headers)
    assert document.status_code == 200
    keys = api.client.get(f"/v1/admin/tenants/{globex.id}/keys", headers=api.headers()).json()
    assert [k["name"] for k in keys if k["revoked_at"] is None] == ["admin", "write", "query"]


def test_platform_and_tenant_pages_need_their_scope(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    browser.sign_in(acme.admin_key)
    assert browser.get("/console/tenants").status_code == 403
    assert browser.get("/console/system").status_code == 403
    platform = Browser(TestClient(api.client.app))
    landing = platform.sign_in(api.platform_key)
    assert landing.url.path == "/console/tenants"
    assert platform.get("/console/namespaces").status_code == 403
    assert platform.get(f"/console/tenants/{acme.id}").status_code == 200


def test_deleting_a_namespace_needs_its_name_typed(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    make_namespace(api, acme, "docs")
    browser.sign_in(acme.admin_key)
    browser.get("/console/namespaces/docs/delete")
    refused = browser.post("/console/namespaces/docs/delete", {"confirm": "doc"})
    assert refused.status_code == 422
    headers = api.headers(acme.admin_key)
    assert api.client.get("/v1/namespaces/docs", headers=headers).status_code == 200
    done = browser.post("/console/namespaces/docs/delete", {"confirm": "docs"})
    assert done.url.path == "/console/namespaces"
    assert api.client.get("/v1/namespaces/docs", headers=headers).status_code == 404


def test_forms_show_the_apis_validation_errors(browser: Browser, acme: Tenant) -> None:
    browser.sign_in(acme.admin_key)
    page = browser.post("/console/namespaces", {"name": "Not Valid"})
    assert page.status_code == 422
    assert texts(page.text, "[role=alert]")[0].startswith("name:")
    page = browser.post("/console/namespaces", {"name": "ok", "indexed_fields": "topic: colour"})
    assert page.status_code == 422
    page = browser.post(f"/console/tenants/{acme.id}/keys", {"name": "k"})  # no scope
    assert page.status_code == 422
    assert "scopes" in texts(page.text, "[role=alert]")[0]
    page = browser.get("/console/namespaces/ok?offset=-1")
    assert page.status_code == 422
    assert texts(page.text, "[role=alert]")[0].startswith("query.offset:")
    assert page.headers["content-security-policy"] == CSP


def test_a_key_made_in_the_console_can_be_limited_to_namespaces(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    make_namespace(api, acme, "docs")
    make_namespace(api, acme, "hr")
    browser.sign_in(acme.admin_key)
    page = browser.post(
        f"/console/tenants/{acme.id}/keys",
        {"name": "docs-only", "scopes": ["query"], "namespaces": " docs , "},
    )
    assert page.status_code == 200, page.text
    secret = texts(page.text, "#new-key")[0]
    listed = api.client.get("/v1/namespaces", headers=api.headers(secret))
    assert [n["name"] for n in listed.json()] == ["docs"]
    hidden = api.client.post(
        "/v1/namespaces/hr/search", json={"question": "pay"}, headers=api.headers(secret)
    )
    assert hidden.status_code == 404
    # A name the tenant does not have is the API's 422, shown in the form.
    page = browser.post(
        f"/console/tenants/{acme.id}/keys",
        {"name": "typo", "scopes": ["query"], "namespaces": "dcos"},
    )
    assert page.status_code == 422
    assert texts(page.text, "[role=alert]")


def test_the_console_stays_out_of_the_api_schema(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_the_console_can_be_turned_off(api: Api) -> None:
    settings = api.platform.settings.model_copy(update={"console": ConsoleConfig(enabled=False)})
    with TestClient(create_app(settings, platform=api.platform)) as client:
        assert client.get("/console").status_code == 404
        assert client.get("/console/static/htmx.min.js").status_code == 404


def test_the_usage_page_charts_requests_tokens_and_rejections(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    make_namespace(api, acme, "docs")
    quotas = {"quotas": {"requests_per_minute": 2}}
    assert api.client.patch(f"/v1/admin/tenants/{acme.id}", json=quotas, headers=api.headers())
    browser.sign_in(acme.admin_key)
    usage = browser.get("/console/usage")
    assert usage.url.path == f"/console/tenants/{acme.id}/usage"
    assert "No requests yet." in usage.text
    statuses = [
        browser.post("/console/namespaces/docs/ask", {"question": q}).status_code
        for q in ("What is here?", "Anything else?", "One more?")
    ]
    assert statuses == [200, 200, 429]  # page views are free; questions draw on the budget
    page = browser.get(f"/console/tenants/{acme.id}/usage")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    cells = texts(page.text, "section[aria-labelledby=usage-title] tbody td")
    assert cells == [today, "2", "1", "0"]  # extractive answers spend no model tokens
    html = HTMLParser(page.text)
    bars = html.css("svg.chart")
    assert len(bars) == 2  # requests and rejections; tokens
    assert len(bars[0].css("g[data-day]")) == 30
    day = bars[0].css_first(f'g[data-day="{today}"]')
    assert day is not None
    assert texts(day.html or "", "title") == [f"{today}: 2 requests, 1 rejected"]
    heights = [float(r.attributes["height"] or 0) for r in day.css("rect")]
    assert heights == [93.33, 46.67]  # of 140: two thirds requests, one third rejected
    assert [r.attributes["class"] for r in day.css("rect")] == ["bar-requests", "bar-rejected"]


def value_of(html: str, selector: str) -> str | None:
    node = HTMLParser(html).css_first(selector)
    assert node is not None, selector
    return node.attributes.get("value")


def test_a_platform_admin_sets_and_lifts_a_tenants_quotas(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    def quotas() -> Any:
        return api.client.get(f"/v1/admin/tenants/{acme.id}", headers=api.headers()).json()[
            "quotas"
        ]

    tenant_admin = Browser(api.client)
    tenant_admin.sign_in(acme.admin_key)
    assert "Save quotas" not in tenant_admin.get(f"/console/tenants/{acme.id}").text
    refused = tenant_admin.post(f"/console/tenants/{acme.id}/quotas", {"requests_per_minute": "9"})
    assert refused.status_code == 403
    assert quotas() == {}
    tenant_admin.post("/console/sign-out")

    browser.sign_in(api.platform_key)
    saved = browser.post(
        f"/console/tenants/{acme.id}/quotas",
        {"requests_per_minute": "5", "tokens_per_minute": "1000"},
    )
    assert saved.url.path == f"/console/tenants/{acme.id}"
    assert texts(saved.text, "[role=status]") == ["Quotas saved: they apply from the next request."]
    assert quotas() == {"requests_per_minute": 5, "tokens_per_minute": 1000}
    assert value_of(saved.text, "#tenant-rpm") == "5"
    lifted = browser.post(f"/console/tenants/{acme.id}/quotas", {"requests_per_minute": "5"})
    assert lifted.status_code == 200
    assert quotas() == {"requests_per_minute": 5}  # an empty field removes that quota
    bad = browser.post(f"/console/tenants/{acme.id}/quotas", {"requests_per_minute": "0"})
    assert bad.status_code == 422
    assert texts(bad.text, "[role=alert]") == [
        "quotas.requests_per_minute: Input should be greater than or equal to 1"
    ]
    assert quotas() == {"requests_per_minute": 5}
    missing = browser.post("/console/tenants/no-such-tenant/quotas", {"requests_per_minute": "5"})
    assert missing.status_code == 404


def test_a_document_s_versions_are_listed_with_the_current_one(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    make_namespace(api, acme, "docs")
    for word in ("aardvark", "bassoon"):
        doc = {"text": f"Book flights via the {word} portal.", "external_id": "travel/policy"}
        job = upload(api, acme, "docs", [{**doc, "filename": f"{word}.txt"}])
        wait_for_job(api, acme, job["job_id"])
    browser.sign_in(acme.admin_key)
    listing = browser.get("/console/namespaces/docs")
    link = HTMLParser(listing.text).css_first("a[aria-label='Versions of travel/policy']")
    assert link is not None
    assert link.attributes["href"] == (
        "/console/namespaces/docs/versions?external_id=travel/policy"
    )
    page = browser.get(link.attributes["href"] or "")
    assert page.status_code == 200
    rows = [
        [td.text(strip=True) for td in tr.css("td")] for tr in HTMLParser(page.text).css("tbody tr")
    ]
    assert [row[:3] + row[4:5] for row in rows] == [
        ["2", "bassoon.txt", "indexed", "yes (current)"]
    ]
    none = browser.get("/console/namespaces/docs/versions?external_id=other")
    assert "No document has this external id." in none.text
    assert browser.get("/console/namespaces/docs/versions").status_code == 422


def test_a_namespace_is_created_with_routes_and_search_settings(
    api: Api, browser: Browser, acme: Tenant
) -> None:
    browser.sign_in(acme.admin_key)
    form = {
        "name": "tuned",
        "mode": "hybrid",
        "fusion": "rrf",
        "rrf_k": "30",
        "rerank": "false",
        "min_score": "0.2",
        "analytical_to_large": "false",
        "long_question_tokens": "80",
    }
    unknown = browser.post("/console/namespaces", {**form, "route_small": "nope"})
    assert unknown.status_code == 422
    assert texts(unknown.text, "[role=alert]") == [
        "routes.small: no generator named 'nope' (configured: none)"
    ]
    # The form keeps what was typed.
    assert value_of(unknown.text, "#ns-rrf_k") == "30"
    out_of_range = browser.post("/console/namespaces", {**form, "candidates": "5"})
    assert out_of_range.status_code == 422
    assert texts(out_of_range.text, "[role=alert]") == [
        "search.candidates: Input should be greater than or equal to 10"
    ]
    created = browser.post("/console/namespaces", form)
    assert created.url.path == "/console/namespaces/tuned"
    stored = api.client.get("/v1/namespaces/tuned", headers=api.headers(acme.admin_key)).json()
    assert stored["search"] == {
        "mode": "hybrid",
        "fusion": "rrf",
        "rrf_k": 30,
        "rerank": False,
        "min_score": 0.2,
    }
    assert stored["routes"] == {
        "policy": {"long_question_tokens": 80, "analytical_to_large": False}
    }
