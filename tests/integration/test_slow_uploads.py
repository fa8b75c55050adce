"""Slow uploads do not starve the API: with 16 uploads trickling in (two tenants, 8 each, every
request slot's worth), a third tenant's read and ``/healthz`` answer at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from scheduler.config import Settings
from tests.integration.api_harness import running_server, write_fleet
from tests.integration.test_api_guard import _keys

pytestmark = pytest.mark.integration

TRICKLE_S = 8.0


def test_sixteen_slow_uploads_leave_reads_and_healthz_answering(
    pg_url: str, tmp_path: Path
) -> None:
    (a, b), (c, _) = _keys(pg_url), _keys(pg_url)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=pg_url, fleet=write_fleet(tmp_path)
    )
    with running_server(settings) as url:
        started = threading.Barrier(17)

        def trickle() -> Iterator[bytes]:
            yield b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            for _ in range(int(TRICKLE_S / 0.5)):
                time.sleep(0.5)
                yield b" "
            yield b"--zz--\r\n"

        def upload(key: str) -> int:
            started.wait()
            headers = {
                "Authorization": f"Bearer {key}",
                "Content-Type": "multipart/form-data; boundary=zz",
            }
            return requests.post(
                url + "/v1/files", headers=headers, data=trickle(), timeout=60
            ).status_code

        with ThreadPoolExecutor(16) as pool:
            # When two tenants hold 16 slow uploads (the server has 16 request slots)
            uploads = [pool.submit(upload, k) for k in [a] * 8 + [b] * 8]
            started.wait()
            time.sleep(1.5)
            # Then a third tenant's read answers within 15 s and /healthz within 2 s
            t0 = time.monotonic()
            read = requests.get(
                url + "/v1/models", headers={"Authorization": f"Bearer {c}"}, timeout=30
            )
            read_s = time.monotonic() - t0
            t0 = time.monotonic()
            health = requests.get(url + "/healthz", timeout=30)
            health_s = time.monotonic() - t0
            still_uploading = sum(not f.done() for f in uploads)
            statuses = [f.result() for f in uploads]
        assert read.status_code == 200 and read_s < 15.0, read_s
        assert health.status_code == 200 and health_s < 2.0, health_s
        assert still_uploading == 16  # the reads really ran while every upload was held
        assert set(statuses) == {400}, statuses  # the form has no file part: a clean 400
