"""Helpers shared by the client commands: API options, error-to-exit-code mapping, waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from scheduler.cli import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from scheduler.client import ApiUnreachable, GridshiftClient
from scheduler.config import get_settings
from scheduler.domain import TERMINAL_BATCH_STATUSES, BatchStatus
from scheduler.errors import (
    ConfigError,
    GridshiftError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

ApiUrlOption = Annotated[
    str | None,
    typer.Option("--api-url", help="API root (default: GRIDSHIFT_API_URL or settings)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="Bearer key (default: GRIDSHIFT_API_KEY)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON object.")]

# Error class -> exit code; the first matching entry wins (subclasses before bases).
_EXIT_CODES: tuple[tuple[type[GridshiftError], int], ...] = (
    (ApiUnreachable, EXIT_UNREACHABLE),
    (NotFound, EXIT_NOT_FOUND),
    (InvalidInput, EXIT_USAGE),
    (
        ConfigError,
        EXIT_USAGE,
    ),  # settings, fleet.yaml, no store or schema: the message says what to change
    (Unauthenticated, EXIT_USAGE),
    (PermissionDenied, EXIT_USAGE),
    (GridshiftError, EXIT_FAILED),
)

FAILED_END_STATUSES = frozenset({BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})


class WaitTimeout(GridshiftError):
    """Raised when ``--wait`` gives up before the batch reaches a terminal status."""


def exit_code_for(error: GridshiftError) -> int:
    """The documented exit code for an error (see ``scheduler.cli`` EXIT_* constants)."""
    if isinstance(error, WaitTimeout):
        return EXIT_TIMEOUT
    return next(code for cls, code in _EXIT_CODES if isinstance(error, cls))


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` to stderr and return the ``typer.Exit`` to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn project errors into a clear message on stderr and the matching exit code."""
    try:
        yield
    except GridshiftError as e:
        kind = type(e).__name__
        message = str(e)
        if isinstance(e, InvalidInput) and e.errors and len(e.errors) > 1:
            message += "".join(f"\n  {err.message}" for err in e.errors[:20])
        raise fail(f"{message} [{kind}]", exit_code_for(e)) from None


def make_client(api_url: str | None, api_key: str | None) -> GridshiftClient:
    """A client for the API named by the options, falling back to the settings."""
    settings = get_settings()
    return GridshiftClient(
        api_url or settings.api_url,
        api_key if api_key is not None else settings.api_key,
        timeout_s=max(settings.http_timeout_s, 30.0),
    )


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def print_batch(batch: dict[str, Any], *, as_json: bool) -> None:
    """Print a batch object as JSON, or as one ``ID STATUS`` line."""
    if as_json:
        print_json(batch)
    else:
        typer.echo(f"{batch['id']} {batch.get('status')}")


def batch_progress(batch: dict[str, Any]) -> tuple[int, int]:
    """``(completed + failed, total)`` from a batch object's ``request_counts``."""
    counts = batch.get("request_counts") or {}
    done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
    return done, int(counts.get("total") or 0)


def request_counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    """``(total, completed, failed)``: a batch object's ``request_counts``, as OpenAI has them."""
    counts = batch.get("request_counts") or {}
    return (
        int(counts.get("total") or 0),
        int(counts.get("completed") or 0),
        int(counts.get("failed") or 0),
    )


def counts_text(batch: dict[str, Any]) -> str:
    """``completed/total completed, N failed``: a failed request is never shown as done."""
    total, completed, failed = request_counts(batch)
    return f"{completed}/{total} completed, {failed} failed"


def batch_error_lines(batch: dict[str, Any], *, limit: int = 10) -> list[str]:
    """``code line N: message`` for the first ``limit`` entries of a batch's ``errors``."""
    lines = []
    for err in ((batch.get("errors") or {}).get("data") or [])[:limit]:
        where = f" line {err['line']}" if err.get("line") else ""
        lines.append(f"{err.get('code') or 'error'}{where}: {err.get('message')}")
    return lines


def wait_for_batch(
    client: GridshiftClient,
    batch: dict[str, Any],
    *,
    poll_s: float,
    timeout_s: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll a batch until it reaches a terminal status, showing progress on stderr.

    On a terminal a progress bar of (completed + failed) / total; elsewhere (CI logs) one
    line per change of status or counts.

    Returns:
        The batch object in its terminal status.

    Raises:
        WaitTimeout: ``timeout_s`` seconds passed first.
        ApiUnreachable: the API stopped answering.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    deadline = None if timeout_s is None else clock() + timeout_s
    batch_id = batch["id"]
    progress = (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=False,
        )
        if console.is_terminal
        else None
    )
    last: tuple[str, int, int] | None = None
    task = progress.add_task(batch_id, total=None) if progress else None
    if progress:
        progress.start()
    try:
        while True:
            status = str(batch.get("status"))
            done, total = batch_progress(batch)
            if progress is not None and task is not None:
                progress.update(
                    task, description=f"{batch_id} {status}", completed=done, total=total or None
                )
            elif (status, done, total) != last and status not in TERMINAL_BATCH_STATUSES:
                # the terminal line is the caller's to print, once
                typer.echo(f"{batch_id} {status} {counts_text(batch)}", err=True)
            last = (status, done, total)
            if status in TERMINAL_BATCH_STATUSES:
                return batch
            pause_s = poll_s
            if deadline is not None:
                remaining_s = deadline - clock()
                if remaining_s <= 0:
                    raise WaitTimeout(
                        f"batch {batch_id} is still {status} ({done}/{total} done) after "
                        f"{timeout_s:g} s; it keeps running: follow it with "
                        f"`gridshift batches show {batch_id}`"
                    )
                pause_s = min(poll_s, remaining_s)
            time.sleep(pause_s)
            batch = client.get_batch(batch_id)
    finally:
        if progress:
            progress.stop()
