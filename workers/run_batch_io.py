"""Where ``gridshift run-batch`` reads and writes: local paths or http(s) URLs, as ``vllm run-batch``.

An http(s) input is fetched with GET into a temporary file (streamed, so a large file never sits
in memory); an http(s) output is written to a temporary file (in ``--output-tmp-dir`` when
given) and uploaded with PUT. A failed upload is retried (connection errors, 408, 429, 5xx) and
then reported with the local copy kept, so the results are never lost. ``--enable-metrics``
serves Prometheus metrics (the process's and vLLM's ``vllm:*``) on ``--port`` for the run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from scheduler.errors import GridshiftError, InvalidInput

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
UPLOAD_TRIES = 3
CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 1000.0  # vLLM allows 1,000 s for large uploads too


class UploadFailed(GridshiftError):
    """The output could not be uploaded to its URL (the local copy is kept)."""


def is_url(where: str | Path) -> bool:
    """Whether ``where`` is an http(s) URL rather than a local path."""
    return isinstance(where, str) and where.startswith(("http://", "https://"))


def fetch_input(url: str, directory: Path | None) -> Path:
    """GET ``url`` into a new temporary file in ``directory`` (system temp when None).

    Raises:
        InvalidInput: the server cannot be reached or answers other than 2xx.
    """
    fd, name = tempfile.mkstemp(prefix="gridshift_batch_input_", suffix=".jsonl", dir=directory)
    path = Path(name)
    try:
        with (
            open(fd, "wb") as fh,
            requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp,
        ):
            if not resp.ok:
                raise InvalidInput(
                    f"cannot read the input file from {url}: HTTP {resp.status_code} "
                    f"{resp.reason}; check the URL (it must answer GET with the JSONL file)"
                )
            for chunk in resp.iter_content(CHUNK):
                fh.write(chunk)
    except requests.RequestException as e:
        path.unlink(missing_ok=True)
        raise InvalidInput(f"cannot read the input file from {url}: {e}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def output_target(output: str | Path, tmp_dir: Path | None) -> Path:
    """The local file the results are written to: ``output`` itself, or a temporary file in
    ``tmp_dir`` (system temp when None) for an http(s) ``output`` that is uploaded afterwards."""
    if not is_url(output):
        return Path(output)
    fd, name = tempfile.mkstemp(prefix="tmp_batch_output_", suffix=".jsonl", dir=tmp_dir)
    open(fd).close()
    return Path(name)


def upload_output(
    path: Path,
    url: str,
    *,
    tries: int = UPLOAD_TRIES,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """PUT the file at ``path`` to ``url`` (streamed from disk).

    Connection errors, timeouts, 408, 429 and 5xx are retried with doubling backoff; any other
    answer outside 2xx fails at once (retrying cannot change it).

    Raises:
        UploadFailed: the last try failed; the message says how, and where the file is kept.
    """
    problem = ""
    for attempt in range(1, tries + 1):
        if attempt > 1:
            sleep(backoff_s * 2 ** (attempt - 2))
        try:
            with (
                path.open("rb") as fh,
                requests.put(url, data=fh, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp,
            ):
                if resp.ok:
                    return
                problem = f"HTTP {resp.status_code} {resp.reason}: {resp.text[:300]!r}"
                if resp.status_code not in RETRY_STATUS:
                    break
        except requests.RequestException as e:
            problem = f"{type(e).__name__}: {e}"
        log.warning("uploading the output to %s failed (try %d): %s", url, attempt, problem)
    raise UploadFailed(
        f"uploading the output to {url} with PUT failed ({problem}); the results are kept in "
        f"{path}: upload that file once the server takes it"
    )


@contextmanager
def metrics_server(port: int | None, host: str | None) -> Iterator[Any]:
    """Serve Prometheus metrics on ``host:port`` while the block runs (nothing when ``port``
    is None), as ``vllm run-batch --enable-metrics`` does.

    Raises:
        InvalidInput: the port cannot be bound.
    """
    if port is None:
        yield None
        return
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host or "0.0.0.0")
    except OSError as e:
        raise InvalidInput(
            f"cannot serve metrics on {host or '0.0.0.0'}:{port}: {e}; choose a free --port"
        ) from None
    log.info("Prometheus metrics on http://%s:%d/metrics", host or "0.0.0.0", port)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
