"""The operator's console in headless Chromium on a LIVE service (issue 21).

Real processes on PostgreSQL and Redis, the clock pinned mid-hour for all of them:
``gridshift serve``, ``gridshift dispatch`` (tick and planner thread) and ``gridshift worker``
(Celery, the tiny model). A tenant submits a batch with the official ``openai`` client; it is
planned, run and booked by those processes. Then an admin key of ANOTHER tenant reads the
console and the test asserts what an on-call engineer relies on: the live worker listed and
counted, the fleet's batches, signal strips at their own resolution, forecast and actual
labelled, one explanation panel, a readable bad-key error, 24-hour UTC inputs, and no page-wide
overflow from 1280 to 1920 px. ``GRIDSHIFT_SCREENSHOT_DIR=docs/img`` refreshes the README's
Workers picture from this live service.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from e2e_helpers import (
    chat_line,
    migrated_settings,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)
from test_dashboard_browser import _sign_in, _wait, browser  # noqa: F401

from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.tenants import create_api_key
from tests.integration.api_harness import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

GRIDSHIFT = Path(sys.executable).parent / "gridshift"
TWENTY_FOUR_HOUR = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A gridshift process, its output in ``log``, terminated after the block."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(GRIDSHIFT), *args], env=env, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def live_service(settings: Settings, tmp: Path) -> Iterator[str]:
    """serve + dispatch + one worker on ``settings``; yields the API's URL."""
    env = {**worker_env(settings), "GRIDSHIFT_TICK_S": "2"}
    port = free_port()
    with ExitStack() as stack:
        serve = stack.enter_context(
            _process(["serve", "--port", str(port), "--no-upgrade-db"], env, tmp / "serve.log")
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: serve.poll() is not None or _up(f"{url}/healthz"),
            30,
            f"gridshift serve (log: {tmp / 'serve.log'})",
        )
        assert serve.poll() is None, (tmp / "serve.log").read_text()[-2000:]
        stack.enter_context(_process(["dispatch", "--interval-s", "2"], env, tmp / "dispatch.log"))
        worker = start_worker(settings, tmp / "worker.log")
        stack.callback(stop_worker, worker)
        yield url


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _spacing_min(points: list[dict[str, object]], slot_minutes: int) -> int:
    """The smallest gap between consecutive points, in minutes (the slot if fewer than two)."""
    times = [datetime.fromisoformat(str(p["time"])) for p in points]
    gaps = [(b - a).total_seconds() / 60 for a, b in zip(times, times[1:], strict=False)]
    return int(min([g for g in gaps if g > 0] + [slot_minutes]))


def _shot(driver: object, name: str) -> None:
    target = Path(os.environ.get("GRIDSHIFT_SCREENSHOT_DIR") or tempfile.mkdtemp()) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    assert driver.save_screenshot(str(target))  # type: ignore[attr-defined]


def test_console_on_a_live_service(
    tmp_path: Path,
    fresh_pg_url: str,
    redis_url: str,
    tiny_weights: Path,
    pinned_now: datetime,
    browser: object,  # noqa: F811
) -> None:
    from openai import OpenAI
    from selenium.webdriver.common.by import By

    driver = browser
    settings = migrated_settings(
        tmp_path,
        fresh_pg_url,
        redis_url,
        tiny_weights,
        max_shard_requests=3,
        lease_s=10,
        heartbeat_s=2,
    )
    sessions = session_factory(make_engine(settings.database_url))
    with sessions() as s, s.begin():
        tenant_key = create_api_key(s, "acme")
        admin_key = create_api_key(s, "ops", admin=True)  # a tenant with no batch of its own
    deadline = pinned_now.replace(minute=0) + timedelta(hours=1)  # the slot in progress
    with live_service(settings, tmp_path) as url:
        # Given a tenant's batch submitted with the official client, run by the live service
        client = OpenAI(base_url=f"{url}/v1", api_key=tenant_key, max_retries=0, timeout=30)
        content = "".join(json.dumps(chat_line(f"q{i}")) + "\n" for i in range(6)).encode()
        uploaded = client.files.create(file=("in.jsonl", content), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"deadline": deadline.isoformat()},
        )
        done = wait_for(
            lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b,
            150,
            f"the batch to complete (logs in {tmp_path})",
            every_s=1,
        )
        assert done.request_counts.completed == 6
        lo, hi = pinned_now - timedelta(hours=3), pinned_now + timedelta(hours=9)
        night = f"from={lo:%Y-%m-%dT%H:%MZ}&to={hi:%Y-%m-%dT%H:%MZ}"
        admin = {"Authorization": f"Bearer {admin_key}"}
        schedule = httpx.get(
            f"{url}/v1/schedule",
            params={"from": lo.isoformat(), "to": hi.isoformat()},
            headers=admin,
            timeout=30,
        ).json()

        # When an operator first pastes a wrong key
        driver.get(f"{url}/dashboard?{night}")  # type: ignore[attr-defined]
        _sign_in(driver, "gs-not-a-key")
        error = _wait(driver, "#keyerror:not([hidden])")[0].text  # type: ignore[attr-defined]
        # Then the error is a sentence, not raw JSON
        assert error.startswith("That key was not accepted:") and "{" not in error, error
        # When the admin key of another tenant is pasted
        driver.find_element(By.ID, "keyinput").clear()  # type: ignore[attr-defined]
        _sign_in(driver, admin_key)
        bars = _wait(driver, "rect[data-shard-id]")
        assert {b.get_attribute("data-batch-id") for b in bars} == {batch.id}  # type: ignore[attr-defined]
        # Then every signal strip is drawn at its own points' resolution, not the slot's
        for path in driver.find_elements(By.CSS_SELECTOR, "path.signal-carbon"):  # type: ignore[attr-defined]
            site = path.get_attribute("data-site")
            series = next(s for s in schedule["signals"] if s["site"] == site)
            expected = _spacing_min(series["points"], schedule["slot_minutes"])
            assert int(path.get_attribute("data-resolution-min")) == expected, site
        # and the signal points say whether they are forecast or actual
        kinds = {
            d.get_attribute("data-kind")
            for d in driver.find_elements(By.CSS_SELECTOR, "circle.signal-dot")  # type: ignore[attr-defined]
        }
        assert kinds and kinds <= {"actual", "forecast"}, kinds
        # and the range inputs hold 24-hour UTC times
        driver.find_element(By.ID, "range-plan").click()  # type: ignore[attr-defined]
        wait_for(
            lambda: TWENTY_FOUR_HOUR.match(
                driver.find_element(By.ID, "range-from").get_attribute("value")  # type: ignore[attr-defined]
            ),
            10,
            "the plan's range in the inputs",
        )

        # When the batch list is opened: the admin sees the fleet's batch, with its tenant
        driver.find_element(By.CSS_SELECTOR, '#tabs button[data-view="batches"]').click()  # type: ignore[attr-defined]
        row = _wait(driver, f'#batch-list tr[data-batch-id="{batch.id}"]')[0]
        assert "acme" in row.text  # type: ignore[attr-defined]
        assert "every tenant" in driver.find_element(By.ID, "batch-count").text  # type: ignore[attr-defined]
        # and its "why" opens ONE explanation (the schedule's refresh and the click race)
        row.find_element(By.CSS_SELECTOR, "button.why").click()  # type: ignore[attr-defined]
        _wait(driver, "#batch-why")
        driver.find_element(By.ID, "refresh").click()  # type: ignore[attr-defined]
        time.sleep(2)
        assert len(driver.find_elements(By.ID, "batch-why")) == 1  # type: ignore[attr-defined]
        header = driver.find_element(By.CSS_SELECTOR, "#batch-shards tr").text  # type: ignore[attr-defined]
        assert "(actual)" in header
        # and the layout holds from 1280 to 1920 px: nothing overflows the page sideways
        for width in (1280, 1400, 1920):
            driver.set_window_size(width, 1000)  # type: ignore[attr-defined]
            time.sleep(0.5)
            overflow = driver.execute_script(  # type: ignore[attr-defined]
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (width, overflow)
        driver.set_window_size(1440, 1180)  # type: ignore[attr-defined]

        # When the workers view is opened: the live worker is listed and counted in its pool
        driver.find_element(By.CSS_SELECTOR, '#tabs button[data-view="workers"]').click()  # type: ignore[attr-defined]
        pools = _wait(driver, "#worker-pools tr")
        cells = pools[1].find_elements(By.TAG_NAME, "td")  # type: ignore[attr-defined]
        assert cells[0].text == "e2e-site.cpu" and cells[3].text == "1"
        workers = driver.find_element(By.ID, "worker-list").text  # type: ignore[attr-defined]
        assert re.search(r"e2e-site\.cpu\.\d+@\S+ e2e-site/cpu live", workers), workers
        _shot(driver, "console-workers.png")
