"""The ops console in a real headless Chromium (OS packages chromium and chromium-driver, driven by Selenium),
against one real stack for the whole module: the session's redis-server and PostgreSQL, TWO `peak serve` API
processes and a `peak worker`. One browser session goes through the steps in order: sign in, see the switches,
shed a subsystem (the other process obeys within a second), see the audit entry arrive, apply and roll back a
plan, watch the stock move while a scripted buyer purchases, lose and regain the stream, be refused as a
non-admin. Screenshots of each step go to PEAK_SCREENSHOTS_DIR (default .peak/screenshots/)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.processes import free_port
from tests.conftest import TEST_REDIS, Servers, clean
from tests.support import REPO, kill_group, run_peak, start_peak, wait_http

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TEST_REDIS == "cluster", reason="the page, not Redis's topology: once is enough"),
]

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver import Chrome
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the dev extra installs it
    pytest.fail("selenium is missing: run `make test` (it installs the dev extra) or pip install -e '.[dev]'")

ADMIN_TOKEN = "console-browser-admin-token-0123"
PASSWORD = "console-browser-password-0123"
BUYERS = 8
STOCK = 30
WAIT_S = 10.0
APT = "sudo apt-get install chromium chromium-driver   (or run `make test` as root: it installs them)"


def _screens() -> Path:
    folder = Path(os.environ.get("PEAK_SCREENSHOTS_DIR") or REPO / ".peak" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Stack:
    urls: list[str]
    env: dict[str, str]
    log_dir: Path
    event_id: int
    buyers: list[dict[str, str]]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def logs(self) -> str:
        return "; ".join(str(p) for p in sorted(self.log_dir.glob("*.log")))


def _account(http: httpx.Client, name: str) -> None:
    made = http.post("/sso/users", json={"username": name, "password": PASSWORD})
    assert made.status_code == 201, made.text


def _buyer(http: httpx.Client, name: str) -> dict[str, str]:
    _account(http, name)
    login = http.post("/sso/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    http.cookies.clear()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    clean(servers)
    log_dir = tmp_path_factory.mktemp("console-browser")
    env = {
        **servers.env(),
        "PEAK_ADMIN_TOKEN": ADMIN_TOKEN,
        "PEAK_WORKERS": "1",
        # Pub/sub alone must carry a change to the other process within the second promised.
        "PEAK_DEGRADE_RESYNC_S": "30",
        # The test's own load must not make the controller shed anything behind its back.
        "PEAK_DEGRADE_CONTROLLER": "0",
        "PEAK_DEGRADE_HEARTBEAT_S": "0.5",
        "PEAK_DEGRADE_SERIES_S": "0.5",
        "PEAK_SECKILL_IP_RATE_PER_S": "1000000",
        "PEAK_SECKILL_USER_RATE_PER_S": "1000000",
        # One issuer for both processes (by default each names its own URL): tokens valid on either.
        "PEAK_SSO_ISSUER": "http://peak.test",
    }
    ports = [free_port(), free_port()]
    procs = [
        start_peak("serve", env={**env, "PEAK_PORT": str(p)}, log=log_dir / f"api-{p}.log") for p in ports
    ]
    procs.append(start_peak("worker", env=env, log=log_dir / "worker.log"))
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            wait_http(f"{url}/readyz")
        with httpx.Client(base_url=urls[0], timeout=10) as http:
            _account(http, "opsadmin")
            _account(http, "viewer")
            buyers = [_buyer(http, f"buyer{i}") for i in range(BUYERS)]
            at = dt.datetime.now(dt.UTC)
            made = http.post(
                "/seckill/events",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                json={
                    "sku": "SKU-CONSOLE", "title": "Phone", "price": 99_900, "stock": STOCK,
                    "starts_at": (at - dt.timedelta(seconds=60)).isoformat(),
                    "ends_at": (at + dt.timedelta(hours=1)).isoformat(), "ticket_required": False,
                },
            )  # fmt: skip
            assert made.status_code == 201, made.text
        granted = run_peak("sso", "grant", "opsadmin", "admin", env=env)
        assert granted.returncode == 0, granted.stderr
        yield Stack(urls, env, log_dir, int(made.json()["id"]), buyers, procs)
    finally:
        for proc in procs:
            kill_group(proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Chrome]:
    """The one browser session of the module (it quits before the stack stops: it holds a stream open)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail(f"the browser tests need Chromium and its driver from the OS packages: {APT}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--lang=en-GB"):  # fmt: skip
        options.add_argument(arg)
    # The explicit driver: Selenium Manager never downloads anything.
    driver = Chrome(service=Service(executable_path=driver_path), options=options)
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    try:
        yield driver
    finally:
        driver.quit()
        if terminal is not None:
            terminal.write_line(f"\nconsole screenshots: {_screens()}")


# ---- helpers ---------------------------------------------------------------------------------------------


def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    def safe(d: WebDriver) -> Any:
        try:
            return check(d)
        except StaleElementReferenceException:
            return False

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(safe)
    except WebDriverException as exc:
        shot = _screens() / f"failed-{what.replace(' ', '-')[:40]}.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"not seen within {timeout_s} s: {what} (screenshot {shot})") from exc


def el(driver: WebDriver, css: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, css)


def click(driver: WebDriver, css: str) -> None:
    """A click as a user makes it: the element brought into view first (the header is sticky)."""
    target = el(driver, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    target.click()


def visible(css: str) -> Callable[[WebDriver], Any]:
    def check(d: WebDriver) -> Any:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else False

    return check


def cell(driver: WebDriver, subsystem: str, column: str) -> str:
    return el(driver, f'#switches-body tr[data-subsystem="{subsystem}"] td.{column}').text


def shot(target: WebDriver | WebElement, name: str) -> Path:
    path = _screens() / f"{name}.png"
    driver = target.parent if isinstance(target, WebElement) else target
    driver.execute_script("document.getElementById('toasts').replaceChildren()")
    if isinstance(target, WebElement):
        target.screenshot(str(path))
    else:
        target.save_screenshot(str(path))
    return path


def sign_in(driver: WebDriver, stack: Stack, username: str) -> None:
    until(driver, visible("#view-signin"), "the sign-in form")
    for css, value in (("#signin-username", username), ("#signin-password", PASSWORD)):
        box = el(driver, css)
        box.clear()
        box.send_keys(value)
    click(driver, "#signin-submit")


def console(driver: WebDriver, stack: Stack) -> None:
    """The console open and live, signed in as the admin (signing in if this step runs alone)."""
    if not driver.current_url.startswith(stack.urls[0]):
        driver.get(f"{stack.urls[0]}/console/")
    with contextlib.suppress(AssertionError):
        until(driver, lambda d: visible("#view-signin")(d) or visible("#view-console")(d), "a view", 5)
    if el(driver, "#view-signin").is_displayed():
        sign_in(driver, stack, "opsadmin")
    until(driver, visible("#view-console"), "the console")
    until(driver, lambda d: el(d, "#conn").get_attribute("data-state") == "live", "the live stream")


def change_switch(
    driver: WebDriver, name: str, mode: str, reason: str, *, percent: int | None = None
) -> None:
    click(driver, f'button[data-change="{name}"]')
    until(driver, visible("#switch-dialog"), "the switch dialog")
    click(driver, f'#switch-form input[name=mode][value="{mode}"]')
    if percent is not None:
        box = el(driver, "#switch-percent")
        box.clear()
        box.send_keys(str(percent))
    el(driver, "#switch-reason").send_keys(reason)


def submit_switch(driver: WebDriver) -> None:
    click(driver, "#switch-submit")


# ---- the steps ---------------------------------------------------------------------------------------------


def test_sign_in_and_see_the_switches(browser: Chrome, stack: Stack) -> None:
    browser.get(f"{stack.urls[0]}/console")
    assert browser.current_url == f"{stack.urls[0]}/console/"
    until(browser, visible("#view-signin"), "the sign-in form")
    shot(browser, "01-sign-in")
    browser.find_element(By.ID, "signin-username").send_keys("opsadmin")
    browser.find_element(By.ID, "signin-password").send_keys("not the password")
    click(browser, "#signin-submit")
    until(browser, lambda d: "Wrong username or password" in el(d, "#signin-error").text, "a refused login")
    sign_in(browser, stack, "opsadmin")
    until(browser, visible("#view-console"), "the console")
    until(browser, lambda d: el(d, "#conn").get_attribute("data-state") == "live", "the live stream")
    assert "opsadmin" in el(browser, "#who-name").text
    names = {
        row.get_attribute("data-subsystem")
        for row in browser.find_elements(By.CSS_SELECTOR, "#switches-body tr[data-subsystem]")
    }
    assert {"sso", "seckill", "reviews", "customer_service"} <= names, names
    assert "console" not in names and "degrade" not in names
    assert cell(browser, "reviews", "effective") == "open"
    assert "core" in (
        el(browser, '#switches-body tr[data-subsystem="seckill"] .tier').get_attribute("class") or ""
    )
    # The session cookie is HttpOnly: the page's script cannot read it.
    assert "peak_sid" not in str(browser.execute_script("return document.cookie"))
    # Nothing is fetched from anywhere else (no CDN, no web font).
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert fetched and all(str(u).startswith(stack.urls[0] + "/") for u in fetched), fetched
    shot(el(browser, "#switches"), "02-switches")

    # Keyboard only: a real button takes Enter, the dialog focuses its reason, Escape closes it.
    button = el(browser, 'button[data-change="customer_service"]')
    browser.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)
    until(browser, visible("#switch-dialog"), "the dialog opened from the keyboard")
    assert browser.execute_script("return document.activeElement.id") == "switch-reason"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    until(browser, lambda d: not el(d, "#switch-dialog").is_displayed(), "the dialog closed by Escape")


def test_shed_reviews_reaches_the_second_process_and_the_audit_without_a_reload(
    browser: Chrome, stack: Stack
) -> None:
    console(browser, stack)
    browser.execute_script("window.__same_page = true")
    change_switch(browser, "reviews", "shed", "console test: flash sale starts")
    shot(el(browser, "#switch-dialog"), "03-switch-dialog")
    other = f"{stack.urls[1]}/reviews/SKU-CONSOLE"
    with httpx.Client(timeout=5) as http:
        assert "x-degraded" not in http.get(other).headers
        clicked = time.monotonic()
        submit_switch(browser)
        while time.monotonic() - clicked < 5 and http.get(other).headers.get("x-degraded") != "reviews":
            time.sleep(0.01)
        took = time.monotonic() - clicked
    print(f"reviews shed on the second API process {took:.3f} s after the click")
    assert took < 3.0, (
        f"the second process did not serve reviews as shed within 3 s of the click ({took:.3f} s)"
    )
    until(browser, lambda d: cell(d, "reviews", "effective") == "shed", "reviews shown as shed")
    assert cell(browser, "reviews", "by").startswith("opsadmin")
    assert "flash sale starts" in cell(browser, "reviews", "why")
    until(
        browser,
        lambda d: "flash sale starts" in el(d, "#audit-body tr:first-child").text,
        "the audit entry on the page",
    )
    assert browser.execute_script("return window.__same_page === true"), "the page was reloaded"
    shot(el(browser, "#audit"), "04-audit")

    # Shedding a core subsystem asks for confirmation, then sends force.
    change_switch(browser, "seckill", "shed", "console test: core drill")
    until(browser, visible("#switch-force"), "the core confirmation")
    submit_switch(browser)
    until(
        browser, lambda d: "confirmation" in el(d, "#switch-error").text, "the refusal without confirmation"
    )
    shot(el(browser, "#switch-dialog"), "05-core-confirmation")
    click(browser, "#switch-force-ok")
    submit_switch(browser)
    until(browser, lambda d: cell(d, "seckill", "effective") == "shed", "seckill shown as shed")
    change_switch(browser, "seckill", "open", "console test: core drill over")
    submit_switch(browser)
    until(browser, lambda d: cell(d, "seckill", "effective") == "open", "seckill open again")

    # Partial shedding: a share of the users, sticky per user.
    change_switch(browser, "customer_service", "partial", "console test: a quarter", percent=25)
    submit_switch(browser)
    until(browser, lambda d: cell(d, "customer_service", "effective") == "partial 25 %", "partial 25 %")
    change_switch(browser, "customer_service", "auto", "console test: the controller again")
    submit_switch(browser)
    until(browser, lambda d: cell(d, "customer_service", "effective") == "open", "customer_service open")

    # The audit filters: only seckill's entries, newest first.
    el(browser, "#audit-name").send_keys("seckill")
    click(browser, "#audit-apply")

    def only_seckill(d: WebDriver) -> bool:
        names = {e.text for e in d.find_elements(By.CSS_SELECTOR, "#audit-body td.name")}
        return names == {"seckill"} and "core drill over" in el(d, "#audit-body tr:first-child").text

    until(browser, only_seckill, "the audit filtered to seckill, newest first")
    click(browser, "#audit-clear")
    until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-body tr[data-entry]")) >= 3,
        "all entries",
    )


def test_apply_and_roll_back_a_plan(browser: Chrome, stack: Stack) -> None:
    console(browser, stack)
    click(browser, "#plan-new")
    until(browser, visible("#plan-dialog"), "the plan editor")
    el(browser, "#plan-name").send_keys("sale-start")
    el(browser, "#plan-description").send_keys("shed what is not the sale")
    browser.execute_script(
        "const s = document.getElementById('plan-mode-customer_service'); s.value = 'shed';"
        "s.dispatchEvent(new Event('change'));"
    )
    el(browser, "#plan-mode-reviews").send_keys("partial")
    percent = el(browser, "#plan-percent-reviews")
    percent.clear()
    percent.send_keys("40")
    el(browser, "#plan-reason").send_keys("console test: the plan for the start")
    shot(el(browser, "#plan-dialog"), "06-plan-editor")
    click(browser, "#plan-submit")
    card = '#plans-list article[data-plan="sale-start"]'
    until(browser, visible(card), "the new plan in the list")

    click(browser, f'{card} button[data-action="apply"]')
    until(browser, visible("#action-dialog"), "the apply dialog")
    el(browser, "#action-reason").send_keys("console test: the sale starts")
    click(browser, "#action-submit")
    until(
        browser,
        lambda d: cell(d, "customer_service", "effective") == "shed",
        "customer_service shed by the plan",
    )
    until(
        browser,
        lambda d: cell(d, "reviews", "effective").startswith("partial 40"),
        "reviews partial by the plan",
    )
    until(browser, lambda d: "applied" in el(d, card).text, "the plan shown as applied")
    shot(el(browser, "#plans"), "07-plan-applied")
    shot(el(browser, "#switches"), "08-switches-plan-applied")

    click(browser, f'{card} button[data-action="rollback"]')
    until(browser, visible("#action-dialog"), "the rollback dialog")
    el(browser, "#action-reason").send_keys("console test: back")
    click(browser, "#action-submit")
    until(browser, lambda d: cell(d, "customer_service", "effective") == "open", "customer_service restored")
    until(browser, lambda d: cell(d, "reviews", "effective") == "shed", "reviews restored to shed")
    until(browser, lambda d: "the sale starts" in el(d, "#audit-body").text, "the plan's audit entry")
    shot(el(browser, "#switches"), "09-switches-rolled-back")

    # At a time (typed in the viewer's zone): the schedule applies it by itself; a later one is cancelled.
    schedule(browser, card, in_ms=2000, reason="console test: at the start")
    until(browser, lambda d: "scheduled" in el(d, card).text, "the plan shown as scheduled")
    until(browser, lambda d: cell(d, "customer_service", "effective") == "shed", "the plan applied on time")
    until(browser, lambda d: "scheduled" not in el(d, card).text, "the schedule done")
    schedule(browser, card, in_ms=3_600_000, reason="console test: tomorrow maybe")
    until(browser, lambda d: "scheduled" in el(d, card).text, "the plan scheduled in an hour")
    shot(el(browser, "#plans"), "10-plan-scheduled")
    click(browser, f'{card} button[data-action="cancel schedule"]')
    until(browser, visible("#action-dialog"), "the cancel dialog")
    el(browser, "#action-reason").send_keys("console test: not tomorrow")
    click(browser, "#action-submit")
    until(browser, lambda d: "scheduled" not in el(d, card).text, "the schedule cancelled")
    click(browser, f'{card} button[data-action="rollback"]')
    until(browser, visible("#action-dialog"), "the second rollback dialog")
    el(browser, "#action-reason").send_keys("console test: back again")
    click(browser, "#action-submit")
    until(
        browser, lambda d: cell(d, "customer_service", "effective") == "open", "customer_service open again"
    )


_LOCAL_TIME = """
const d = new Date(Date.now() + arguments[0]);
const pad = (n) => String(n).padStart(2, "0");
const box = document.getElementById("action-at");
box.value = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:`
  + `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
box.dispatchEvent(new Event("input"));
"""


def schedule(driver: WebDriver, card: str, *, in_ms: int, reason: str) -> None:
    click(driver, f'{card} button[data-action="apply"]')
    until(driver, visible("#action-dialog"), "the apply dialog")
    driver.execute_script(_LOCAL_TIME, in_ms)
    assert el(driver, '#action-form input[name=when][value="at"]').is_selected()
    el(driver, "#action-reason").send_keys(reason)
    click(driver, "#action-submit")


_SALE_ROW = """
const row = document.querySelector(`#sale-body tr[data-event="${arguments[0]}"]`);
if (!row) return null;
const nums = [...row.querySelectorAll("td.num")].map((td) => td.textContent.replace(/[^0-9.]/g, ""));
return {left: Number(row.querySelector(".stock-left").textContent.replace(/[^0-9]/g, "")),
        reserved: nums[0], pending: nums[2], rate: row.querySelector("td.rate").textContent};
"""


def _sale(driver: WebDriver, event_id: int) -> dict[str, Any] | None:
    """The event's row as the page shows it, read in one script (the panel redraws every second)."""
    row: dict[str, Any] | None = driver.execute_script(_SALE_ROW, str(event_id))
    return row


def _stock_left(driver: WebDriver, event_id: int) -> int | None:
    row = _sale(driver, event_id)
    return None if row is None else int(row["left"])


def test_the_stock_panel_moves_while_a_buyer_purchases(browser: Chrome, stack: Stack) -> None:
    console(browser, stack)
    until(browser, lambda d: _stock_left(d, stack.event_id) == STOCK, "the event with its whole stock")
    done = threading.Event()
    failures: list[str] = []

    def buy() -> None:
        try:
            with httpx.Client(base_url=stack.urls[1], timeout=10) as http:
                for headers in stack.buyers:
                    answer = http.post(f"/seckill/events/{stack.event_id}/orders", headers=headers)
                    if answer.status_code != 202:
                        failures.append(answer.text)
                    time.sleep(0.5)
        finally:
            done.set()

    buyer = threading.Thread(target=buy)
    buyer.start()
    seen: list[int] = []
    rates: list[str] = []
    while not done.is_set():
        left = _stock_left(browser, stack.event_id)
        if left is not None and (not seen or seen[-1] != left):
            seen.append(left)
        row = _sale(browser, stack.event_id)
        if row is not None:
            rates.append(str(row["rate"]))
        time.sleep(0.1)
    buyer.join()
    assert not failures, failures
    until(
        browser, lambda d: _stock_left(d, stack.event_id) == STOCK - BUYERS, "the stock after the purchases"
    )
    print(f"stock left seen on the page while buying: {seen}")
    assert any(STOCK - BUYERS < v < STOCK for v in seen), (
        f"the panel did not move during the purchases: {seen}"
    )
    assert any(r not in ("—", "0", "0.0") for r in rates), f"no purchases/s shown: {set(rates)}"
    until(browser, lambda d: (_sale(d, stack.event_id) or {}).get("pending") == str(BUYERS),
          "the orders written, pending payment")  # fmt: skip
    shot(el(browser, "#sale"), "11-sale")
    # The signals of the last minutes, the whole panel in one picture (a taller window for it).
    window = browser.find_element(By.CSS_SELECTOR, "#signals-window")
    window.send_keys("5")
    until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#charts-subsystem polyline"), "the charts drawn"
    )
    browser.set_window_size(1440, 1700)
    shot(el(browser, "#signals"), "12-signals")
    browser.set_window_size(1440, 1000)
    shot(el(browser, "#breakers"), "13-breakers")
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    page = shot(browser, "14-console")
    # The README's picture: refreshed on request only, so that a test run leaves the tree as it was.
    docs = REPO / "docs" / "console.png"
    if os.environ.get("PEAK_UPDATE_DOCS_SCREENSHOT") == "1" or not docs.exists():
        shutil.copyfile(page, docs)


def test_the_page_says_when_the_stream_is_lost_and_comes_back(browser: Chrome, stack: Stack) -> None:
    console(browser, stack)
    api = stack.procs[0]
    port = stack.urls[0].rsplit(":", 1)[1]
    kill_group(api, signal.SIGKILL)
    until(browser, lambda d: el(d, "#conn").get_attribute("data-state") == "down", "the lost stream shown")
    assert "since" in el(browser, "#conn").text or "lost" in el(browser, "#conn").text
    shot(el(browser, "header"), "15-stream-lost")
    stack.procs[0] = start_peak(
        "serve", env={**stack.env, "PEAK_PORT": port}, log=stack.log_dir / f"api-{port}.log"
    )
    wait_http(f"{stack.urls[0]}/readyz")
    until(browser, lambda d: el(d, "#conn").get_attribute("data-state") == "live", "the stream back", 20)
    assert cell(browser, "reviews", "effective") == "shed"


def test_a_non_admin_is_refused(browser: Chrome, stack: Stack) -> None:
    console(browser, stack)
    click(browser, "#signout")
    until(browser, visible("#view-signin"), "the sign-in form after signing out")
    sign_in(browser, stack, "viewer")
    until(browser, visible("#view-forbidden"), "the 403 view")
    assert "lacks the admin role" in el(browser, "#view-forbidden").text
    assert not el(browser, "#view-console").is_displayed()
    shot(browser, "16-not-an-admin")
    cookie = browser.get_cookie("peak_sid")
    assert cookie is not None and cookie["httpOnly"]
    with httpx.Client(base_url=stack.urls[0], timeout=5, cookies={"peak_sid": cookie["value"]}) as http:
        refused = http.get("/console/api/me")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    # Over every step: no script error and nothing the Content-Security-Policy had to block.
    logged = [str(e.get("message")) for e in browser.get_log("browser")]  # type: ignore[no-untyped-call]
    print(f"browser console: {len(logged)} lines, e.g. {logged[:3]}")
    broken = [m for m in logged if "Content Security Policy" in m or "Uncaught" in m or "TypeError" in m]
    assert not broken, broken
