"""The operator's console in headless Chromium on the demo's night, served by ``gridshift serve``.

The store is the one ``gridshift demo`` leaves (a real plan, real shards run by the real
worker code, a real ledger and output files), plus two batches submitted over HTTP during the
test: one still in progress (to cancel) and one whose file fails validation (per-request
errors). One browser session drives every view. ``GRIDSHIFT_SCREENSHOT_DIR=docs/img`` refreshes
the README's pictures of the console.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from demo_run import DemoRun
from sqlalchemy import func, select
from test_dashboard_browser import _sign_in, _wait, browser, serve_store  # noqa: F401

from scheduler.client import GridshiftClient
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tables import Batch, PlanRecord, Shard
from scheduler.store.tenants import create_api_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "data"
SCREENSHOT_DIR_ENV = "GRIDSHIFT_SCREENSHOT_DIR"


@dataclass(frozen=True)
class Console:
    """A served demo store: where, with which key, and the batches added for the test."""

    url: str
    key: str
    store_url: str
    pending_id: str
    failed_id: str


@pytest.fixture
def console(demo_run: DemoRun, tmp_path: Path) -> Iterator[Console]:
    """``gridshift serve`` on a copy of the demo's data dir, with an admin key of its tenant.

    A copy: the test adds, fails and cancels batches, and the session's other demo tests read
    the demo's own store as the demo left it.
    """
    assert demo_run.code == 0, "\n".join(demo_run.lines)
    shutil.copytree(demo_run.data_dir, tmp_path / "data")
    copied = DemoRun(tmp_path / "data", demo_run.code, demo_run.lines)
    sessions = session_factory(make_engine(copied.url))
    with sessions() as s, s.begin():
        key = create_api_key(s, "demo", admin=True)
    with serve_store(copied.data_dir, "") as url:
        with GridshiftClient(url, key) as client:
            good = client.upload_file("faq.jsonl", (JOBS / "faq-sample.jsonl").read_bytes())
            pending = client.create_batch(good["id"], endpoint="/v1/chat/completions", options={})
            bad_lines = (JOBS / "faq-sample.jsonl").read_text().splitlines()[0] + "\n{not json\n"
            bad = client.upload_file("bad.jsonl", bad_lines.encode())
            failed = client.create_batch(bad["id"], endpoint="/v1/chat/completions", options={})
        yield Console(url, key, copied.url, pending["id"], failed["id"])


def _shot(driver: object, name: str) -> None:
    target = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tempfile.mkdtemp()) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    assert driver.save_screenshot(str(target))  # type: ignore[attr-defined]


def _listed(driver: object) -> list[str]:
    """The batch ids in the batch list, read in one script (the list re-renders on filters)."""
    return driver.execute_script(  # type: ignore[attr-defined, no-any-return]
        "return [...document.querySelectorAll('#batch-list tr[data-batch-id]')]"
        ".map(r => r.dataset.batchId)"
    )


def _row_status(driver: object, batch_id: str) -> str | None:
    return driver.execute_script(  # type: ignore[attr-defined, no-any-return]
        "const r = document.querySelector(`#batch-list tr[data-batch-id='${arguments[0]}']`);"
        "return r ? r.dataset.status : null",
        batch_id,
    )


def _tab(driver: object, view: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-view="{view}"]').click()  # type: ignore[attr-defined]


def test_console_on_the_demo_night(console: Console, browser: object) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser
    sessions = session_factory(make_engine(console.store_url))
    with sessions() as s:
        plan = s.scalars(select(PlanRecord)).one()
        shard_ids = set(s.scalars(select(Shard.id)).all())
        n_batches = s.scalar(select(func.count()).select_from(Batch))
    start = plan.horizon_start.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    night = f"from={start:%Y-%m-%dT%H:%MZ}&to={start + timedelta(hours=24):%Y-%m-%dT%H:%MZ}"
    # Given an operator opening the console on the demo's night (a shared range link)
    driver.get(f"{console.url}/dashboard?{night}")  # type: ignore[attr-defined]
    _sign_in(driver, console.key)
    bars = _wait(driver, "rect[data-shard-id]")
    # Then the schedule draws one bar per shard that ran, with tooltips and labels
    assert {b.get_attribute("data-shard-id") for b in bars} == shard_ids  # type: ignore[attr-defined]
    assert all(b.find_element(By.TAG_NAME, "title").get_attribute("textContent") for b in bars)  # type: ignore[attr-defined]
    assert driver.find_elements(By.CSS_SELECTOR, "text.bar-label")  # type: ignore[attr-defined]
    # and the forecast strips the plan used, for every site, not booked slots only
    for cls in ("signal-carbon", "signal-price", "signal-renewable"):
        paths = driver.find_elements(By.CSS_SELECTOR, f"path.{cls}")  # type: ignore[attr-defined]
        assert {p.get_attribute("data-site") for p in paths} == {
            "gb-london",
            "de-frankfurt",
            "es-madrid",
        }
        assert all(p.get_attribute("data-source") != "booked" for p in paths)
        assert all(p.get_attribute("d").count("L") > 20 for p in paths)
    # and site strips are grey and dashed, never a batch colour
    strokes = {
        p.get_attribute("stroke")
        for p in driver.find_elements(By.CSS_SELECTOR, "path.signal-carbon")
    }  # type: ignore[attr-defined]
    fills = {b.get_attribute("fill") for b in bars}  # type: ignore[attr-defined]
    assert strokes and not strokes & fills

    # When the backlog's bar is clicked
    madrid = [
        b
        for b in bars
        if "es-madrid" in b.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    ]  # type: ignore[attr-defined]
    madrid[-1].click()
    why = _wait(driver, "#batch-why")[0]
    # Then its explanation says where it ran against running at once, the next-best option and the limit
    text = why.text  # type: ignore[attr-defined]
    assert "Why here and why now" in text and "had it run at once" in text
    assert "next-best option" in text and "limited by" in text.lower()
    _shot(driver, "console-schedule.png")

    # When the batch list is opened
    _tab(driver, "batches")
    rows = _wait(driver, "#batch-list tr[data-batch-id]")
    assert len(rows) == n_batches
    # and filtered to failed batches, whose per-request errors are shown
    Select(driver.find_element(By.ID, "batch-status")).select_by_value("failed")  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: _listed(d) == [console.failed_id])  # type: ignore[arg-type]
    driver.find_element(
        By.CSS_SELECTOR, f'tr[data-batch-id="{console.failed_id}"] button.dl-errors'
    ).click()  # type: ignore[attr-defined]
    errors = _wait(driver, "#error-lines tr")
    assert any("line 2" in e.text for e in errors)  # type: ignore[attr-defined]
    Select(driver.find_element(By.ID, "batch-status")).select_by_value("")  # type: ignore[attr-defined]
    _wait(driver, f'tr[data-batch-id="{console.pending_id}"] button.cancel')
    # and a completed batch's output is downloaded (fetched with the key in a header)
    driver.find_element(By.CSS_SELECTOR, "#batch-list button.dl-output").click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(  # type: ignore[arg-type]
        lambda d: any(
            "/content" in r
            for r in d.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
        )
    )
    _shot(driver, "console-batches.png")
    # and the in-progress batch is cancelled from its row
    driver.find_element(
        By.CSS_SELECTOR, f'tr[data-batch-id="{console.pending_id}"] button.cancel'
    ).click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: d.switch_to.alert).accept()  # type: ignore[arg-type]
    WebDriverWait(driver, 10).until(  # type: ignore[arg-type]
        lambda d: _row_status(d, console.pending_id) in ("cancelling", "cancelled")
    )
    with sessions() as s:
        assert s.get(Batch, console.pending_id).status in ("cancelling", "cancelled")  # type: ignore[union-attr]

    # When the workers view is opened
    _tab(driver, "workers")
    pools = _wait(driver, "#worker-pools tr")
    # Then every pool and the worker that ran the night's shards are listed
    assert len(pools) == 1 + 3
    workers = driver.find_element(By.ID, "worker-list").text  # type: ignore[attr-defined]
    assert "es-madrid/cpu" in workers or "gb-london/cpu" in workers
    # (the README's Workers picture comes from the live service: test_console_live.py)

    # When the savings view is opened, it charts the days with units
    _tab(driver, "savings")
    assert _wait(driver, "#savings-chart rect")
    days = driver.find_element(By.ID, "savings-days").text  # type: ignore[attr-defined]
    assert re.search(r"\d [mµk]?g\b", days) and re.search(r"\d [mµk]?Wh\b", days)
    assert "e-0" not in days
    # and the realised saving is split by place and time and by model choice (labelled)
    assert "by place and time" in days and "by model choice" in days
    assert "(planned)" in driver.find_element(By.ID, "savings-batches").text  # type: ignore[attr-defined]
    _shot(driver, "console-savings.png")
    # and nothing came from anywhere but this server (offline, no CDN)
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )  # type: ignore[attr-defined]
    assert all(r.startswith(console.url) or r.startswith("blob:") for r in resources), resources
