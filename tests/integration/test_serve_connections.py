"""``gridshift serve`` (a real process) against half-open connections: they are closed after the
header timeout, and ``/healthz`` answers meanwhile."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scheduler.api.serving import AcceptErrorLog
from tests.integration.api_harness import free_port

pytestmark = pytest.mark.integration

HALF_OPEN = 300


def test_half_open_connections_are_closed_after_the_header_timeout(
    pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GRIDSHIFT_DATABASE_URL": pg_url,
        "GRIDSHIFT_DATA_DIR": str(tmp_path / "data"),
        "GRIDSHIFT_HEADER_TIMEOUT_S": "2",
    }
    exe = str(Path(sys.executable).with_name("gridshift"))
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        # When 300 clients connect and send half a request head, never finishing it
        for _ in range(HALF_OPEN):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        # Then /healthz still answers at once
        started = time.monotonic()
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        assert time.monotonic() - started < 2.0
        # and the server closes every half-open connection after the 2 s header timeout
        time.sleep(3.0)
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == HALF_OPEN
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_accept_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    handler = AcceptErrorLog(every_s=60)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="scheduler.api.serving"):
            for _ in range(1000):
                handler(
                    loop,
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    },
                )
    finally:
        loop.close()
    assert len(caplog.records) == 1
    assert handler.suppressed == 999
