"""The console in a real browser: headless Chromium against a live `bridgehead server` on a demo home.

Screenshots of the main pages are written to docs/images/ as part of the run.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from tests.live import BRIDGEHEAD, bridgehead_env, running_server
from tests.web.browser import ADMIN, DESKTOP, PASSWORD, open_context, path_of, shot, sign_in, watch_console

pytestmark = pytest.mark.browser

# Console messages the tests provoke (see conftest.py): Chromium logs "Failed to load resource: ... status of
# 4xx" for a page served with an error status, even one that shows the error as it should. 401: the login form
# again after a wrong password; 429: the same once sign-ins are throttled; 403: /audit for a business user.
IGNORED_CONSOLE = r"status of 4(01|03|29)"
PAGE_TIMEOUT_MS = 10_000

ETHICS = "ethics@demo.bridgehead.dev"
RETAIL_USER = "user.retail@demo.bridgehead.dev"
MOBILE: ViewportSize = {"width": 390, "height": 844}
AREA_LABELS = [
    "Portfolio",
    "Data",
    "Experiments",
    "Models",
    "Deployments",
    "Monitoring",
    "Incidents",
    "Governance",
    "Organization",
    "Audit",
]
RETAIL_AND_CENTRAL = {
    f"{local}@demo.bridgehead.dev"
    for local in (
        "admin",
        "pm",
        "ethics",
        "ds.retail",
        "mle.retail",
        "de.retail",
        "champion.retail",
        "user.retail",
    )
}

# What test_admin_manages_the_organization created, for the audit test to find (when run in this module).
CREATED: dict[str, str] = {}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A demo organization seeded by `bridgehead demo`, served by `bridgehead server`."""
    home = tmp_path_factory.mktemp("browser") / "home"
    subprocess.run(
        [BRIDGEHEAD, "demo", "--home", str(home), "--no-serve"],
        env=bridgehead_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = bridgehead_env(
        home=str(home), database_url=f"sqlite:///{home}/bridgehead.db", secret_key="browser-test-key"
    )
    with running_server(env, log=home / "server.log") as url:
        yield url


@pytest.fixture
def other_page(browser: Browser, base_url: str) -> Iterator[Callable[..., Page]]:
    """Opens a page in a further fresh context (no cookies: another person, or a replayed cookie), watched for
    console problems like `page` of conftest.py; all are closed after the test, then checked."""
    contexts: list[BrowserContext] = []
    problems: list[list[str]] = []

    def make(viewport: ViewportSize = DESKTOP) -> Page:
        context = open_context(browser, base_url, viewport, timeout_ms=PAGE_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        problems.append(watch_console(page, IGNORED_CONSOLE))
        return page

    yield make
    for context in contexts:
        context.close()
    found = [problem for watched in problems for problem in watched]
    assert not found, found


def test_login_redirects_rejects_wrong_password_and_honours_next(page: Page) -> None:
    page.goto("/organization")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Forganization$"))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    shot(page, "login.png")

    page.get_by_label("E-mail").fill(ADMIN)
    page.get_by_label("Password").fill("not-the-password")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("E-mail or password is not correct.")
    assert path_of(page) == "/login"
    expect(page.get_by_label("E-mail")).to_have_value(ADMIN)
    # The failed form kept where the visitor was going.
    expect(page.locator("input[name=next]")).to_have_value("/organization")

    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert path_of(page) == "/organization"
    expect(page.get_by_role("heading", name="Organization", exact=True)).to_be_visible()
    expect(page.locator(".who")).to_contain_text("Amara Okafor")
    shot(page, "organization.png")


def test_repeated_wrong_passwords_are_throttled(page: Page) -> None:
    # The demo server allows 5 failures per e-mail within the window; the sixth attempt is refused outright.
    for _ in range(5):
        sign_in(page, "nobody@demo.bridgehead.dev", "wrong-password")
        expect(page.get_by_role("alert")).to_have_text("E-mail or password is not correct.")
    sign_in(page, "nobody@demo.bridgehead.dev", "wrong-password")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")


def test_overview_lists_every_area_and_coming_areas_render_in_the_shell(page: Page) -> None:
    sign_in(page, ADMIN)
    assert path_of(page) == "/"
    expect(page.get_by_role("heading", name="Good to see you, Amara")).to_be_visible()
    nav = page.get_by_role("complementary", name="Main navigation").locator("nav a")
    expect(nav).to_have_text(["Overview", *AREA_LABELS])
    expect(nav.filter(has_text="Overview")).to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator(".stat-n").first).to_have_text("4")  # central team + three demo units
    shot(page, "overview.png")

    with page.expect_navigation():
        nav.filter(has_text=re.compile(r"^Portfolio$")).click()
    assert path_of(page) == "/portfolio"
    expect(page.locator(".shell .content h1")).to_have_text("Portfolio")
    expect(page.locator(".empty")).to_contain_text("not available in this release yet")
    expect(page.locator(".topbar .crumbs")).to_have_text("Portfolio")
    expect(nav.filter(has_text=re.compile(r"^Portfolio$"))).to_have_class(re.compile(r"\bactive\b"))


def test_admin_manages_the_organization(page: Page, other_page: Callable[..., Page]) -> None:
    sign_in(page, ADMIN, path="/login?next=/organization")
    assert path_of(page) == "/organization"

    unit_form = page.locator("#unit-form")
    unit_form.get_by_label("Name").fill("Wealth Management")
    unit_form.get_by_label("Slug").fill("wealth-management")
    unit_form.get_by_label("Description").fill("Private banking and investment advice.")
    with page.expect_navigation():
        unit_form.get_by_role("button", name="Create unit").click()
    expect(page.get_by_role("status")).to_have_text("Business unit Wealth Management created.")
    card = page.locator(".cards .card", has_text="Wealth Management")
    expect(card).to_contain_text("wealth-management · 0 people")

    invite = page.locator("#invite-form")
    invite.get_by_label("Name").fill("Ines Duarte")
    invite.get_by_label("E-mail").fill("ines.duarte@demo.bridgehead.dev")
    invite.get_by_label("Role").select_option(label="Data scientist")
    invite.get_by_label("Business unit").select_option(label="Wealth Management")
    with page.expect_navigation():
        invite.get_by_role("button", name="Invite").click()
    notice = page.get_by_role("status")
    expect(notice).to_contain_text(re.compile(r"^Ines Duarte invited\. One-time password\b"))
    match = re.search(r"One-time password[^:]*: (\S+)$", notice.inner_text().strip())
    assert match, notice.inner_text()
    one_time_password = match.group(1)
    expect(card).to_contain_text("wealth-management · 1 people")

    row = page.locator('#people tr[data-email="ines.duarte@demo.bridgehead.dev"]')
    expect(row.locator(".pill-role")).to_have_text("Data scientist")
    expect(row).to_contain_text("Wealth Management")
    row.get_by_label("Role of Ines Duarte").select_option(label="ML engineer")
    with page.expect_navigation():
        row.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Ines Duarte updated.")
    expect(row.locator(".pill-role")).to_have_text("ML engineer")
    expect(row.get_by_label("Role of Ines Duarte")).to_have_value("ml_engineer")
    CREATED.update(unit="wealth-management", email="ines.duarte@demo.bridgehead.dev")

    newcomer = other_page()
    sign_in(newcomer, "ines.duarte@demo.bridgehead.dev", one_time_password)
    assert path_of(newcomer) == "/"
    expect(newcomer.locator(".who")).to_contain_text("Ines Duarte")
    expect(newcomer.locator(".who")).to_contain_text("ML engineer")


def test_business_user_sees_only_their_unit_and_no_admin_forms(page: Page) -> None:
    sign_in(page, RETAIL_USER, path="/login?next=/organization")
    assert path_of(page) == "/organization"
    expect(page.locator(".who")).to_contain_text("Business user (read-only)")
    expect(page.locator("#people tbody tr").first).to_be_visible()
    expect(page.locator("#invite-form")).to_have_count(0)
    expect(page.locator("#unit-form")).to_have_count(0)
    expect(page.locator("#people .inline-form")).to_have_count(0)
    expect(page.locator("#people th")).not_to_contain_text(["Assign"])

    emails = set(page.locator("#people tbody tr").evaluate_all("rows => rows.map(r => r.dataset.email)"))
    assert emails == RETAIL_AND_CENTRAL
    assert "ds.lending@demo.bridgehead.dev" not in emails
    units = set(page.locator("#people tbody tr td.unit").all_inner_texts())
    assert units == {"Retail Banking", "AI Platform (central)"}


def test_audit_trail_filters_and_verifies(page: Page, other_page: Callable[..., Page]) -> None:
    sign_in(page, ETHICS, path="/login?next=/audit")
    assert path_of(page) == "/audit"
    rows = page.locator("#events tbody tr")
    # Newest first: this very sign-in is the latest event.
    expect(rows.first).to_contain_text("session.login")
    expect(rows.first).to_contain_text(ETHICS)
    if CREATED:
        expect(rows.filter(has_text="business_unit.create").filter(has_text=ADMIN).first).to_contain_text(
            "wealth-management"
        )
        expect(rows.filter(has_text="person.update").first).to_contain_text("data_scientist → ml_engineer")
    shot(page, "audit.png")

    page.get_by_label("Action").fill("person.")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    assert "action=person." in page.url
    expect(page.get_by_label("Action")).to_have_value("person.")
    actions = rows.locator("td:nth-child(4)").all_inner_texts()
    assert len(actions) >= 14  # the demo's people were invited
    assert all(a.startswith("person.") for a in actions), actions
    assert "person.invite" in actions
    if CREATED:
        assert "person.update" in actions

    with page.expect_navigation():
        page.get_by_role("link", name="Verify the chain").click()
    result = page.locator("#verify-result")
    expect(result).to_contain_text("Chain intact")
    expect(result).to_have_class(re.compile(r"\bflash-ok\b"))

    business = other_page()
    sign_in(business, RETAIL_USER)
    response = business.goto("/audit")
    assert response is not None
    assert response.status == 403
    expect(business.locator(".content h1")).to_have_text("403")
    expect(business.locator(".content .lead")).not_to_be_empty()
    expect(business.locator(".sidebar")).to_be_visible()


def test_sign_out_ends_the_session(page: Page, other_page: Callable[..., Page], base_url: str) -> None:
    sign_in(page, ADMIN)
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "bridgehead_session")
    assert session["httpOnly"]
    assert session["secure"]

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert path_of(page) == "/login"
    assert not [c for c in page.context.cookies() if c["name"] == "bridgehead_session"]
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))

    # Replaying the old cookie value does not bring the session back.
    old = other_page()
    old.context.add_cookies([{"name": "bridgehead_session", "value": session["value"], "url": base_url}])
    response = old.request.get("/", headers={"Accept": "text/html"}, max_redirects=0)
    assert response.status == 303
    assert response.headers["location"].startswith("/login")
    old.goto("/organization")
    expect(old).to_have_url(re.compile(r"/login\?next=%2Forganization$"))


def test_layout_is_responsive_on_a_phone(page: Page) -> None:
    page.set_viewport_size(MOBILE)
    sign_in(page, ADMIN, path="/login?next=/organization")
    assert path_of(page) == "/organization"
    expect(page.locator("#people")).to_be_visible()
    widths = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth})"
    )
    assert widths["scroll"] <= widths["client"] + 1, widths
    shot(page, "organization-mobile.png")
