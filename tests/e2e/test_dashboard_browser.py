"""The dashboard in headless Chromium against a real ``gridshift serve`` on a seeded store."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from conftest import unavailable
from review_seed import Seeded, seed_review_store
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.store.tables import AssignmentRecord, Shard

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Set GRIDSHIFT_SCREENSHOT=docs/img/dashboard.png to refresh the README picture; by default the
# screenshot goes to the test's tmp dir so a test run leaves the tree clean.
SCREENSHOT_ENV = "GRIDSHIFT_SCREENSHOT"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1180",
    "--hide-scrollbars",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_store(data_dir: Path, database_url: str) -> Iterator[str]:
    """``gridshift serve`` in a subprocess on a free port over a store; yields its URL."""
    port = _free_port()
    exe = shutil.which("gridshift") or str(Path(sys.executable).with_name("gridshift"))
    env = {
        **os.environ,
        "GRIDSHIFT_DATABASE_URL": database_url,
        "GRIDSHIFT_DATA_DIR": str(data_dir),
    }
    proc = subprocess.Popen(
        [exe, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"gridshift serve did not come up on {url}: {err[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def server(
    settings: Settings, sessions: sessionmaker[Session], pinned_now: datetime
) -> Iterator[tuple[str, Seeded]]:
    """``gridshift serve`` in a subprocess on a store seeded with a real plan and ledger.

    The subprocess inherits the pinned clock (``GRIDSHIFT_CLOCK``) the store was seeded at.
    """
    seeded = seed_review_store(sessions, now=pinned_now)
    with serve_store(settings.data_dir, settings.resolved_database_url) as url:
        yield url, seeded


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Selenium and the system chromedriver (no downloads)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        unavailable("chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="gridshift-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: object, css: str, timeout_s: float = 15.0) -> list[object]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(  # type: ignore[arg-type]
        lambda d: d.find_elements(By.CSS_SELECTOR, css) or False
    )


def _sign_in(driver: object, key: str) -> None:
    from selenium.webdriver.common.by import By

    _wait(driver, "#keyinput")
    driver.find_element(By.ID, "keyinput").send_keys(key)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "keyform").submit()  # type: ignore[attr-defined]


def test_dashboard_draws_one_bar_per_shard_with_signals_and_opens_a_batch(
    server: tuple[str, Seeded], browser: object, sessions: sessionmaker[Session]
) -> None:
    from selenium.webdriver.common.by import By

    url, seeded = server
    driver = browser
    # Given an admin following a link with a key in the URL
    driver.get(f"{url}/dashboard?key={seeded.admin_key}")  # type: ignore[attr-defined]
    # Then the key left the address bar and was NOT used: the form says why
    _wait(driver, "#keyerror:not([hidden])")
    assert "key=" not in driver.current_url  # type: ignore[attr-defined]
    assert "address bar" in driver.find_element(By.ID, "keyerror").text  # type: ignore[attr-defined]
    # When the admin pastes the key into the form instead
    _sign_in(driver, seeded.admin_key)
    _wait(driver, "rect[data-shard-id]")
    # and there is exactly one bar per shard, plus one planned bar per uncut assignment
    shard_bars = driver.find_elements(By.CSS_SELECTOR, "rect[data-shard-id]")  # type: ignore[attr-defined]
    assert sorted(b.get_attribute("data-shard-id") for b in shard_bars) == sorted(seeded.shard_ids)
    planned = driver.find_elements(By.CSS_SELECTOR, "rect[data-assignment-id]")  # type: ignore[attr-defined]
    # (the default window ends a whole hour before now + 20 h, so in the first minutes of an
    # hour the seed's last planned slot falls just outside it: count those inside the window)
    end = datetime.fromisoformat(driver.execute_script("return state.schedule.end"))  # type: ignore[attr-defined]
    with sessions() as s:
        starts = s.execute(
            select(AssignmentRecord.slot_start).where(
                AssignmentRecord.id.in_(seeded.uncut_assignment_ids)
            )
        ).scalars()
        inside = [t for t in starts if (t if t.tzinfo else t.replace(tzinfo=UTC)) < end]
    assert len(planned) == len(inside) > 0
    with sessions() as s:
        status = dict(s.execute(select(Shard.id, Shard.status)).all())
    for bar in shard_bars:
        assert f"status-{status[bar.get_attribute('data-shard-id')]}" in bar.get_attribute("class")
    # and each site's carbon intensity, price and renewable output are drawn, with "now"
    for cls in ("signal-carbon", "signal-price", "signal-renewable"):
        paths = driver.find_elements(By.CSS_SELECTOR, f"path.{cls}")  # type: ignore[attr-defined]
        assert {p.get_attribute("data-site") for p in paths} == {
            "de-frankfurt",
            "gb-london",
            "se-lulea",
        }
        assert all(p.get_attribute("d").count("L") > 20 for p in paths)
    assert driver.find_elements(By.ID, "now-marker")  # type: ignore[attr-defined]
    # and nothing was fetched from anywhere but this server (works offline, no CDN)
    resources = driver.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(r.startswith(url) for r in resources), resources

    # When a done shard's bar is clicked
    done_bars = [b for b in shard_bars if "status-done" in b.get_attribute("class")]
    per_batch = [b.get_attribute("data-batch-id") for b in shard_bars]
    done = max(done_bars, key=lambda b: per_batch.count(b.get_attribute("data-batch-id")))
    batch_id = done.get_attribute("data-batch-id")
    done.click()
    rows = _wait(driver, "#batch-shards tr[data-shard-id]")
    # Then the batch view lists where and when each of its shards ran, and labels estimates
    with sessions() as s:
        expected = set(s.scalars(select(Shard.id).where(Shard.batch_id == batch_id)).all())
    assert {r.get_attribute("data-shard-id") for r in rows} == expected  # type: ignore[attr-defined]
    panel = driver.find_element(By.ID, "batch").text  # type: ignore[attr-defined]
    assert batch_id in panel and "gCO2/kWh" in panel and "at once" in panel
    if "est." in panel:
        assert "ESTIMATED energy" in panel
    # and the batch is linked from the address bar, so a reload reopens it
    assert driver.current_url.endswith(f"#batch={batch_id}")  # type: ignore[attr-defined]
    driver.refresh()  # type: ignore[attr-defined]
    _wait(driver, "#batch-shards tr[data-shard-id]")
    assert batch_id in driver.find_element(By.ID, "batch").text  # type: ignore[attr-defined]
    driver.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    shot = Path(os.environ.get(SCREENSHOT_ENV) or Path(tempfile.mkdtemp()) / "dashboard.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]

    # When the other views are opened, they render from the API
    for view, css in (
        ("savings", "#savings-days tr"),
        ("budget", "#budget-state"),
        ("forecasts", "#forecasts .card"),
    ):
        driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-view="{view}"]').click()  # type: ignore[attr-defined]
        assert _wait(driver, css)
    assert "location-based" in driver.find_element(By.ID, "caveat").get_attribute("textContent")  # type: ignore[attr-defined]


def test_a_tenant_key_sees_only_its_own_bars(server: tuple[str, Seeded], browser: object) -> None:
    from selenium.webdriver.common.by import By

    url, seeded = server
    driver = browser
    # Given acme's key, pasted into the form
    driver.get(f"{url}/dashboard")  # type: ignore[attr-defined]
    _sign_in(driver, seeded.keys["acme"])
    bars = _wait(driver, "#bars rect")
    # Then only acme's batches are drawn
    mine = {b for b, t in seeded.batch_tenant.items() if t == "acme"}
    assert {b.get_attribute("data-batch-id") for b in bars} <= mine  # type: ignore[attr-defined]
    # and a wrong key brings the key form back with the reason
    driver.execute_script("sessionStorage.setItem('gridshift.apiKey', 'gs-wrong')")  # type: ignore[attr-defined]
    driver.get(f"{url}/dashboard")  # type: ignore[attr-defined]
    _wait(driver, "#keyerror:not([hidden])")
    assert driver.find_element(By.ID, "keyform").is_displayed()  # type: ignore[attr-defined]


def test_an_invalid_range_in_the_address_falls_back_with_a_visible_note(
    server: tuple[str, Seeded], browser: object
) -> None:
    from selenium.webdriver.common.by import By

    url, seeded = server
    driver = browser
    # Given a shared link whose range is not a date (it used to throw a RangeError in setRange
    # and leave the console blank)
    driver.get(f"{url}/dashboard?from=abc&to=2026-01-01T00:00Z")  # type: ignore[attr-defined]
    _sign_in(driver, seeded.keys["acme"])
    # Then the console still draws the schedule around now and says what it ignored
    note = _wait(driver, "#range-error:not([hidden])")[0]
    assert "from=abc" in note.text and "window around now" in note.text  # type: ignore[attr-defined]
    _wait(driver, "#bars rect")
    assert driver.find_element(By.ID, "range-from").get_attribute("value") == ""  # type: ignore[attr-defined]
    assert "from=" not in driver.current_url  # type: ignore[attr-defined]
