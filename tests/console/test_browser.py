"""The console in a real browser: Playwright driving Debian's chromium (``/usr/bin/chromium``,
never a downloaded browser) against ``shoal serve`` over HTTP, one server for the module.

Every page a test opens is checked for Content-Security-Policy violations and script errors,
and for form controls without a label. Screenshots of the main pages go to build/screenshots/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    FilePayload,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.api.conftest import make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Served, serve_shoal
from tests.console.test_console import HOSTILE_NAME, HOSTILE_TEXT

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parents[2] / "build" / "screenshots"
PHONE = ViewportSize(width=390, height=844)
ERROR_STATUS = "Failed to load resource: the server responded with a status of 4"
OTTERS = b"Sea otters hold hands while they sleep so that they do not drift apart."
ETNA = b"# Mount Etna\n\nMount Etna, on Sicily, is the most active volcano in Europe.\n"

# A loaded two-core machine; no test gates on wall-clock time (a hang is pytest-timeout's).
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``shoal serve`` for the module, with fault drills on. Two failed calls open a
    breaker (default five), so the drill's breaker opens within two status refreshes; bodies
    over 1 MiB are refused, so a refused upload is cheap to make."""
    data_dir = tmp_path_factory.mktemp("console-served")
    with serve_shoal(
        data_dir,
        f"sqlite:///{data_dir / 'shoal.db'}",
        SHOAL_ENABLE_FAULTS="true",
        SHOAL_BREAKER_FAILURE_THRESHOLD="2",
        SHOAL_MAX_UPLOAD_MB="1",
        SHOAL_GENERATORS='{"quotes": {"backend": "extractive"}}',  # a catalog to choose from
    ) as server:
        yield server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


def _context(chromium: Browser, served: Served, *, phone: bool = False) -> Iterator[Page]:
    context: BrowserContext = (
        chromium.new_context(base_url=served.url, viewport=PHONE, is_mobile=True, has_touch=True)
        if phone
        else chromium.new_context(base_url=served.url)
    )
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A 4xx page is a test's own doing; anything else (a CSP refusal above all) is not.
        if message.type == "error" and not message.text.startswith(ERROR_STATUS):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert problems == [], "CSP violations or script errors"


@pytest.fixture
def page(chromium: Browser, served: Served) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the served console."""
    yield from _context(chromium, served)


@pytest.fixture
def phone(chromium: Browser, served: Served) -> Iterator[Page]:
    yield from _context(chromium, served, phone=True)


@pytest.fixture(scope="module", autouse=True)
def screenshots() -> None:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)


def shot(page: Page, name: str) -> None:
    assert_labelled(page)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def assert_labelled(page: Page) -> None:
    """Every visible form control has a label (or an aria-label)."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(c => c.type !== 'hidden')
            .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
            .map(c => c.name || c.id)"""
    )
    assert unlabelled == []


def menu(page: Page, name: str) -> Locator:
    """A link of the console's menu (pages link to the same places from their content too)."""
    return page.get_by_role("navigation", name="Console").get_by_role("link", name=name)


def sign_in(page: Page, key: str) -> None:
    page.goto("/console")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_a_tenant_admin_creates_a_namespace_uploads_two_files_and_asks(
    served: Served, page: Page
) -> None:
    acme = make_tenant(served, "acme")
    page.goto("/console")
    shot(page, "01-sign-in")
    page.get_by_label("API key").fill("shoal_0000_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "That API key is not valid, or it has been revoked."
    )
    assert page.url == f"{served.url}/console"

    page.get_by_label("API key").fill(acme.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{served.url}/console/namespaces")
    page.get_by_label("Name", exact=True).fill("docs")
    page.get_by_role("button", name="Create namespace").click()
    expect(page).to_have_url(f"{served.url}/console/namespaces/docs")

    page.get_by_label("Files").set_input_files(
        [
            FilePayload(name="otters.txt", mimeType="text/plain", buffer=OTTERS),
            FilePayload(name="etna.md", mimeType="text/markdown", buffer=ETNA),
        ]
    )
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/console/jobs/[0-9a-f-]+$"))
    progress = page.locator("#job-progress")
    expect(progress.locator(".state-indexed")).to_have_count(2)  # htmx reloads the panel
    expect(progress).to_contain_text("succeeded")
    shot(page, "03-job")

    menu(page, "Namespaces").click()
    shot(page, "02-namespaces")
    page.get_by_role("link", name="docs", exact=True).click()
    expect(page).to_have_url(f"{served.url}/console/namespaces/docs")
    for filename in ("otters.txt", "etna.md"):
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=filename))
        expect(row.locator(".state")).to_have_text("indexed")
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("0 documents failed.")).to_be_visible()
    page.get_by_label("State").select_option("indexed")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("2 documents indexed.")).to_be_visible()
    shot(page, "04-namespace")

    page.get_by_role("link", name="Ask", exact=True).click()
    expect(page).to_have_url(f"{served.url}/console/namespaces/docs/ask")
    page.get_by_label("Question").fill("What do sea otters do while they sleep?")
    page.get_by_text("Generation").click()  # the route and model options, folded
    page.get_by_label("Longest answer, in tokens (optional)").fill("64")
    page.get_by_label("Temperature (optional, 0 to 2)").fill("0.2")
    with page.expect_response(re.compile(r"/ask/stream$")) as streamed:
        page.get_by_role("button", name="Ask", exact=True).click()
    assert streamed.value.headers["content-type"].startswith("text/event-stream")
    expect(page.locator(".answer")).to_contain_text("hold hands")
    # Shown as the tokens came, then replaced by the finished panel (citations, timings).
    expect(page.locator("#outcome[data-streamed-tokens]")).to_have_count(1)
    assert int(page.locator("#outcome").get_attribute("data-streamed-tokens") or 0) >= 1
    expect(page.locator(".citation-file").first).to_have_text("otters.txt")
    facts = page.locator("#outcome dl.facts").first  # answerable, route and reason, tokens
    expect(facts.locator("dd").first).to_have_text("yes")
    expect(facts).to_contain_text("Routeextractive:")
    expect(page.get_by_role("heading", name="Stage timings")).to_be_visible()
    expect(page.locator("#outcome")).to_contain_text("total")
    shot(page, "05-ask")

    page.get_by_label("Question").fill("Which volcano is the most active in Europe?")
    page.get_by_label("Search only").check()
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.get_by_role("heading", name="Passages")).to_be_visible()
    expect(page.locator("ol.citations strong").first).to_have_text("etna.md")


def test_keys_are_created_with_scopes_shown_once_and_revoked(served: Served, page: Page) -> None:
    initech = make_tenant(served, "initech")
    make_namespace(served, initech, "docs")
    sign_in(page, initech.admin_key)
    menu(page, "Keys").click()
    page.get_by_label("Key name").fill("ci-bot")
    page.get_by_label("write", exact=True).check()
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key").inner_text()
    shot(page, "06-keys")
    headers = served.headers(secret)
    assert served.client.get("/v1/namespaces/docs", headers=headers).status_code == 200

    menu(page, "Keys").click()  # shown once: not on the page again
    expect(page.locator("#new-key")).to_have_count(0)
    assert secret not in page.content()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="ci-bot"))
    expect(row).to_contain_text("query, write")
    row.get_by_role("button", name="Revoke ci-bot").click()
    expect(row.locator(".state")).to_have_text("revoked")
    assert served.client.get("/v1/namespaces/docs", headers=headers).status_code == 401


def test_a_revoked_key_ends_its_session_and_sign_out_ends_it_too(
    served: Served, page: Page
) -> None:
    hooli = make_tenant(served, "hooli")
    sign_in(page, hooli.admin_key)
    # The session is an HttpOnly cookie: nothing for scripts, nothing in web storage (htmx
    # keeps only the current path there; its page snapshots are off).
    assert page.evaluate("() => document.cookie") == ""
    assert page.evaluate("() => Object.keys(localStorage)") == []
    stored = page.evaluate("() => Object.entries(sessionStorage)")
    assert stored == [["htmx-current-path-for-history", "/console/namespaces"]]
    stolen = page.context.cookies()  # as a thief with a copy of the cookie would hold it
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.goto("/console/namespaces")
    expect(page).to_have_url(f"{served.url}/console")
    # Sign-out ended the session on the server: the copy opens nothing either.
    page.context.clear_cookies()
    page.context.add_cookies(stolen)  # type: ignore[arg-type]  # Cookie is a SetCookieParam
    page.goto("/console/namespaces")
    expect(page).to_have_url(f"{served.url}/console")
    expect(page.get_by_label("API key")).to_be_visible()

    sign_in(page, hooli.admin_key)
    key_id = hooli.admin_key.split("_")[1]
    assert served.client.delete(f"/v1/admin/keys/{key_id}", headers=served.headers()).status_code
    page.reload()
    expect(page).to_have_url(f"{served.url}/console?ended=1")
    expect(page.get_by_role("status")).to_contain_text("Your session has ended")
    expect(page.get_by_label("API key")).to_be_visible()


def test_the_usage_page_charts_the_days_requests_and_rejections(served: Served, page: Page) -> None:
    soylent = make_tenant(served, "soylent")
    make_namespace(served, soylent, "docs")
    quotas = {"quotas": {"requests_per_minute": 1}}
    served.client.patch(f"/v1/admin/tenants/{soylent.id}", json=quotas, headers=served.headers())
    sign_in(page, soylent.admin_key)
    page.goto("/console/namespaces/docs/ask")
    page.get_by_label("Question").fill("What is in here?")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator("#outcome-title")).to_have_text("Answer")
    page.get_by_role("button", name="Ask", exact=True).click()  # over the budget of 1 a minute
    expect(page.get_by_role("alert")).to_contain_text("requests_per_minute quota of 1 is spent")

    menu(page, "Usage").click()
    expect(page.get_by_role("heading", name="Usage of soylent")).to_be_visible()
    chart = page.get_by_role("img", name="Requests and rejections per day")
    expect(chart.locator("rect.bar-requests")).to_have_count(1)
    expect(chart.locator("rect.bar-rejected")).to_have_count(1)
    row = page.locator("section[aria-labelledby=usage-title] tbody tr")
    expect(row.locator("td")).to_have_text([re.compile(r"^\d{4}-"), "1", "1", "0"])
    shot(page, "12-usage")


def test_a_hostile_document_renders_as_text(served: Served, page: Page) -> None:
    umbrella = make_tenant(served, "umbrella")
    make_namespace(served, umbrella, "docs")
    job = upload(served, umbrella, "docs", [{"text": HOSTILE_TEXT, "filename": HOSTILE_NAME}])
    wait_for_job(served, umbrella, job["job_id"])
    sign_in(page, umbrella.admin_key)
    page.goto("/console/namespaces/docs")
    cell = page.get_by_role("cell", name=HOSTILE_NAME, exact=True)
    expect(cell).to_be_visible()
    cell.hover()
    page.goto("/console/namespaces/docs/ask")
    page.get_by_label("Question").fill("How do otters sleep?")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator(".citation-file").first).to_have_text(HOSTILE_NAME)
    quote = page.locator("ol.citations blockquote").first
    expect(quote).to_contain_text('<script>window.pwned=3</script> float on their backs "')
    quote.hover()
    shot(page, "07-hostile-document")
    assert page.evaluate("() => window.pwned") is None
    assert page.locator("[onmouseover]").count() == 0
    assert page.locator("script:not([src])").count() == 0


def test_a_tenant_admin_cannot_reach_another_tenants_pages(served: Served, page: Page) -> None:
    stark, wayne = make_tenant(served, "stark"), make_tenant(served, "wayne")
    make_namespace(served, wayne, "batcave")
    job = upload(served, wayne, "batcave", [{"text": "The cave is under the manor."}])
    sign_in(page, stark.admin_key)
    for path in (
        "/console/namespaces/batcave",
        "/console/namespaces/batcave/ask",
        f"/console/jobs/{job['job_id']}",
        f"/console/tenants/{wayne.id}",
    ):
        response = page.goto(path)
        assert response is not None
        assert response.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shot(page, "08-not-found")


def test_the_console_works_at_phone_width_with_the_keyboard(served: Served, phone: Page) -> None:
    globex = make_tenant(served, "globex")
    make_namespace(served, globex, "docs")
    job = upload(served, globex, "docs", [{"text": OTTERS.decode(), "filename": "otters.txt"}])
    wait_for_job(served, globex, job["job_id"])
    phone.goto("/console")
    # Keyboard only: Tab to the key field, type, Enter submits.
    for _ in range(10):
        phone.keyboard.press("Tab")
        if phone.evaluate("() => document.activeElement.id") == "api-key":
            break
    phone.keyboard.type(globex.admin_key)
    phone.keyboard.press("Enter")
    expect(phone).to_have_url(f"{served.url}/console/namespaces")
    for path in (
        "/console/namespaces",
        "/console/namespaces/docs",
        "/console/namespaces/docs/ask",
        "/console/keys",
        "/console/usage",
    ):
        phone.goto(path)
        overflow = phone.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
    phone.goto("/console/namespaces/docs")
    shot(phone, "11-phone-namespace")
    phone.goto("/console/namespaces/docs/ask")
    phone.get_by_label("Question").fill("What do sea otters do while they sleep?")
    phone.get_by_role("button", name="Ask", exact=True).click()
    expect(phone.locator(".citation-file").first).to_have_text("otters.txt")
    shot(phone, "16-phone-ask")
    phone.goto("/console/usage")
    shot(phone, "17-phone-usage")


def test_dropped_files_upload_and_a_refused_upload_says_why(served: Served, page: Page) -> None:
    initrode = make_tenant(served, "initrode")
    make_namespace(served, initrode, "docs")
    sign_in(page, initrode.admin_key)
    page.goto("/console/namespaces/docs")
    dropped = page.evaluate_handle(
        """() => {
            const files = new DataTransfer();
            files.items.add(new File(["Kelp forests grow along cold coasts."], "kelp.txt",
                                     {type: "text/plain"}));
            return files;
        }"""
    )
    page.dispatch_event("[data-drop]", "drop", {"dataTransfer": dropped})
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/console/jobs/[0-9a-f-]+$"))
    expect(page.locator("#job-progress")).to_contain_text("kelp.txt")
    expect(page.locator("#job-progress .state-indexed")).to_have_count(1)

    page.goto("/console/namespaces/docs")
    page.get_by_label("Files").set_input_files(
        FilePayload(name="big.txt", mimeType="text/plain", buffer=b"otter " * 400_000)
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("over the 1 MiB limit")
    assert page.url == f"{served.url}/console/namespaces/docs"


def test_a_namespace_gets_routes_and_search_settings_and_shows_a_documents_versions(
    served: Served, page: Page
) -> None:
    tyrell = make_tenant(served, "tyrell")
    sign_in(page, tyrell.admin_key)
    page.get_by_label("Name", exact=True).fill("handbook")
    page.get_by_text("Generation routes").click()
    page.get_by_label("Small route").select_option("quotes")
    page.get_by_label("Analytical questions (why, how, compare) to large").select_option("false")
    page.get_by_text("Search settings").click()
    page.get_by_label("Fusion (hybrid)").select_option("rrf")
    page.get_by_label("RRF k (optional)").fill("30")
    shot(page, "13-namespace-create")
    page.get_by_role("button", name="Create namespace").click()
    expect(page).to_have_url(f"{served.url}/console/namespaces/handbook")
    stored = served.client.get("/v1/namespaces/handbook", headers=served.headers(tyrell.admin_key))
    assert stored.json()["routes"] == {"small": "quotes", "policy": {"analytical_to_large": False}}
    assert stored.json()["search"] == {"fusion": "rrf", "rrf_k": 30}
    menu(page, "Namespaces").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="handbook"))
    expect(row).to_contain_text("small quotes, large default")

    for word in ("aardvark", "bassoon"):
        doc = {"text": f"Book flights via the {word} portal.", "external_id": "travel"}
        job = upload(served, tyrell, "handbook", [{**doc, "filename": f"{word}.txt"}])
        wait_for_job(served, tyrell, job["job_id"])
    page.goto("/console/namespaces/handbook")
    page.get_by_role("link", name="Versions of travel").click()
    expect(page.get_by_role("heading", name="Versions of travel")).to_be_visible()
    current = page.get_by_role("row").filter(has=page.get_by_role("cell", name="bassoon.txt"))
    expect(current).to_contain_text("yes (current)")
    expect(current.locator(".state")).to_have_text("indexed")
    shot(page, "14-versions")


def test_a_platform_admin_sets_a_tenants_quotas(served: Served, page: Page) -> None:
    cyberdyne = make_tenant(served, "cyberdyne")
    sign_in(page, served.platform_key)
    page.get_by_role("link", name="cyberdyne").click()
    page.get_by_label("Tenant requests per minute (empty: the server's default)").fill("120")
    page.get_by_label("Tenant model tokens per minute (empty: the server's default)").fill("5000")
    page.get_by_role("button", name="Save quotas").click()
    expect(page.get_by_role("status")).to_have_text(
        "Quotas saved: they apply from the next request."
    )
    expect(page.get_by_text("requests/min 120 · tokens/min 5000")).to_be_visible()
    shot(page, "15-tenant-quotas")
    got = served.client.get(f"/v1/admin/tenants/{cyberdyne.id}", headers=served.headers())
    assert got.json()["quotas"] == {"requests_per_minute": 120, "tokens_per_minute": 5000}


def test_a_platform_admin_runs_a_fault_drill_and_sees_the_breaker_open(
    served: Served, page: Page
) -> None:
    """Last in the module: the store is down for the other tests while the breaker is open."""
    sign_in(page, served.platform_key)
    expect(page).to_have_url(f"{served.url}/console/tenants")
    page.get_by_label("Name", exact=True).fill("wonka")
    page.get_by_label("Requests per minute (optional)").fill("600")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.get_by_role("heading", name="wonka")).to_be_visible()
    menu(page, "Tenants").click()
    expect(page.get_by_role("link", name="wonka")).to_be_visible()
    shot(page, "09-tenants")

    menu(page, "System").click()
    breaker = page.locator('[data-breaker="vector_store"]')
    expect(breaker).to_have_text("closed")
    expect(page.get_by_role("heading", name="Readiness: ready")).to_be_visible()
    try:
        page.get_by_label("Target", exact=True).select_option("vector_store")
        page.get_by_label("Mode", exact=True).select_option("error")
        page.get_by_label("Lasts seconds (optional; unset: until cleared)").fill("120")
        page.get_by_role("button", name="Start drill").click()
        expect(page.locator("#system-status")).to_contain_text("vector_store: error")
        expect(breaker).to_have_text("open")  # each refresh pings the store through it
        expect(page.locator("#system-status")).to_contain_text("degraded")
        shot(page, "10-system-drill")
        page.get_by_role("button", name="Clear all drills").click()
        expect(page.get_by_role("heading", name="Active drills")).to_be_visible()
        expect(page.locator("#system-status")).not_to_contain_text("vector_store: error")
        expect(breaker).to_have_text("closed")  # after breaker_reset_s a probe gets through
    finally:
        served.client.delete("/v1/admin/faults", headers=served.headers())
