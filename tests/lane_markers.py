"""The test lanes: which tests are ``integration``, ``e2e`` or ``slow``, and a guard for the rest.

``make test-fast`` runs what carries none of the three markers: pure unit tests (no database
server, no process started, no model built; SQLite copied from the session's migrated template
at most). ``make test`` (what CI runs) runs everything.

Markers are applied at collection (``apply_lane_markers``): by directory (``tests/integration``,
``tests/e2e``) and by the fixtures a test uses, directly or through other fixtures
(``SERVER_FIXTURES``: integration; ``MODEL_FIXTURES``: slow). What a fixture list cannot show, a
test that starts a process itself or reaches a server, is caught when it runs:
``fast_lane_guard`` makes a test without a lane marker fail at the first process it starts, the
first tiny model it builds or the first PostgreSQL or Redis connection, naming the marker to add.
"""

from __future__ import annotations

import multiprocessing.process
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LANES = ("integration", "e2e", "slow")
"""The markers that take a test out of the fast lane."""

SERVER_FIXTURES = frozenset({"pg_url", "fresh_pg_url", "redis_url"})
"""Fixtures that need a real PostgreSQL or Redis server: their tests are ``integration``."""

MODEL_FIXTURES = frozenset({"tiny_model_dir", "tiny_weights", "demo_run"})
"""Fixtures that build or load a model (or run the whole demo): their tests are ``slow``."""

SERVER_PORTS = frozenset({5432, 6379})
"""PostgreSQL's and Redis's ports: a fast test connecting to one is in the wrong lane."""

_DIRECTORY_LANES = {"integration": "integration", "e2e": "e2e"}


def lane_of(path: Path, fixturenames: Iterator[str] | list[str] | tuple[str, ...]) -> str | None:
    """The lane marker a test needs from where it lives and what it uses (None: fast)."""
    for part in path.parts:
        if part in _DIRECTORY_LANES:
            return _DIRECTORY_LANES[part]
    names = set(fixturenames)
    if names & SERVER_FIXTURES:
        return "integration"
    if names & MODEL_FIXTURES:
        return "slow"
    return None


def apply_lane_markers(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``pytest_collection_modifyitems``: add each test's lane marker where it has none."""
    for item in items:
        if any(item.get_closest_marker(m) for m in LANES):
            continue
        lane = lane_of(Path(str(item.path)), getattr(item, "fixturenames", ()))
        if lane is not None:
            item.add_marker(getattr(pytest.mark, lane))


def _refuse(what: str, marker: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        pytest.fail(
            f"this test {what} but carries no lane marker, so `make test-fast` would run it: "
            f"mark it @pytest.mark.{marker} (or use a fixture that does, see tests/lane_markers.py)",
            pytrace=False,
        )

    return refuse


def _guarded_connect(original: Any) -> Any:
    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in SERVER_PORTS:
            _refuse(f"connects to a database server ({address[0]}:{address[1]})", "integration")()
        return original(sock, address)

    return connect


@pytest.fixture(autouse=True)
def fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test without a lane marker that starts a process, builds a model or reaches a server."""
    if any(request.node.get_closest_marker(m) for m in LANES):
        return
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("starts a subprocess", "slow"))
    monkeypatch.setattr(
        multiprocessing.process.BaseProcess, "start", _refuse("starts a process", "slow")
    )
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect(socket.socket.connect))
    try:
        import psycopg
    except ImportError:
        pass
    else:
        refuse_pg = _refuse("connects to PostgreSQL", "integration")
        monkeypatch.setattr(psycopg, "connect", refuse_pg)
        monkeypatch.setattr(psycopg.Connection, "connect", classmethod(refuse_pg))
    try:
        import workers.engines.tiny_model as tiny_model
    except ImportError:
        return
    monkeypatch.setattr(tiny_model, "build_tiny_model", _refuse("builds a tiny model", "slow"))
