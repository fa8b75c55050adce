"""The fast lane's markers and guard (tests/lane_markers.py) do what ``make test-fast`` relies on."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from lane_markers import lane_of


def test_lanes_come_from_the_directory_then_the_fixtures() -> None:
    assert lane_of(Path("tests/integration/test_x.py"), ["tmp_path"]) == "integration"
    assert lane_of(Path("tests/e2e/test_x.py"), []) == "e2e"
    assert lane_of(Path("tests/unit/test_x.py"), ["settings", "pg_url"]) == "integration"
    assert lane_of(Path("tests/unit/test_x.py"), ["redis_url"]) == "integration"
    assert lane_of(Path("tests/unit/test_x.py"), ["harness", "tiny_weights"]) == "slow"
    assert lane_of(Path("tests/unit/test_x.py"), ["sessions", "tmp_path"]) is None


def test_an_unmarked_test_cannot_start_a_subprocess() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_an_unmarked_test_cannot_start_a_process() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"mark it @pytest.mark.slow"):
        multiprocessing.get_context("spawn").Process(target=print).start()


def test_an_unmarked_test_cannot_reach_postgresql() -> None:
    import psycopg

    with pytest.raises(pytest.fail.Exception, match=r"mark it @pytest.mark.integration"):
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.mark.slow
def test_a_slow_test_may_start_a_subprocess() -> None:
    done = subprocess.run([sys.executable, "-c", "print(42)"], capture_output=True, check=True)
    assert done.stdout.strip() == b"42"
