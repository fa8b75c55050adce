"""Intake commands: ``submit``, ``jobs submit`` and ``keys create``."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli import EXIT_FAILED, EXIT_OK
from scheduler.client import GridshiftClient
from scheduler.clock import now_utc
from scheduler.commands.common import (
    FAILED_END_STATUSES,
    ApiKeyOption,
    ApiUrlOption,
    JsonOption,
    batch_error_lines,
    counts_text,
    exit_on_error,
    make_client,
    print_batch,
    print_json,
    wait_for_batch,
)
from scheduler.errors import InvalidInput
from scheduler.jobs import (
    build_batch_file,
    check_against_fleet,
    create_options,
    job_summary,
    load_job,
    parse_iso_datetime,
)
from scheduler.review.units import plural

WaitOption = Annotated[
    bool,
    typer.Option("--wait", help="Show progress until the batch ends; exit 1 unless completed."),
]
PollOption = Annotated[float, typer.Option("--poll-s", min=0.1, help="Seconds between polls.")]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout-s", min=0.0, help="Give up waiting after this many seconds (exit 5)."),
]


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    """Turn ``k=v`` strings into a metadata mapping.

    Raises:
        InvalidInput: a pair has no ``=`` or an empty key.
    """
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--metadata expects key=value, got {pair!r}")
        metadata[key.strip()] = value
    return metadata


def submit_options(
    *,
    deadline: str | None,
    window: str | None,
    min_quality: float | None,
    sites: str | None,
    priority: float | None,
    metadata: list[str],
) -> dict[str, Any]:
    """The create-body fields of ``gridshift submit`` (besides the file id and endpoint).

    Raises:
        InvalidInput: both ``deadline`` and ``window`` are given, or a value is malformed.
    """
    if deadline and window:
        raise InvalidInput("give either --deadline or --window, not both")
    options: dict[str, Any] = {"completion_window": window or "24h"}
    if deadline:
        try:
            at = parse_iso_datetime(deadline)
        except ValueError as e:
            raise InvalidInput(
                f"--deadline must be an ISO datetime like 2026-11-23T06:00:00Z, got {deadline!r}"
            ) from e
        options["deadline"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if min_quality is not None:
        options["min_quality"] = min_quality
    if sites:
        options["sites"] = [s.strip() for s in sites.split(",") if s.strip()]
    if priority is not None:
        options["priority"] = priority
    if metadata:
        options["metadata"] = parse_metadata(metadata)
    return options


def submit_content(
    client: GridshiftClient,
    *,
    filename: str,
    content: bytes,
    endpoint: str,
    options: dict[str, Any],
    wait: bool,
    poll_s: float,
    timeout_s: float | None,
    as_json: bool,
) -> int:
    """Upload ``content``, create its batch, report it and optionally wait for its end.

    Returns:
        The exit code: 0, or 1 when the batch ended failed, expired or cancelled (with or
        without ``wait``: a file that fails validation gives a ``failed`` batch at once).

    Raises:
        GridshiftError: the API refused or could not be reached; ``WaitTimeout`` when waiting
            ran out of time.
    """
    uploaded = client.upload_file(filename, content)
    batch = client.create_batch(uploaded["id"], endpoint=endpoint, options=options)
    if not wait:
        print_batch(batch, as_json=as_json)
        if batch.get("status") in FAILED_END_STATUSES:  # e.g. the file failed validation
            for line in batch_error_lines(batch):
                typer.echo(f"  {line}", err=True)
            return EXIT_FAILED
        return EXIT_OK
    typer.echo(f"submitted {batch['id']} ({uploaded['id']}), waiting", err=True)
    batch = wait_for_batch(client, batch, poll_s=poll_s, timeout_s=timeout_s)
    if as_json:
        print_json(batch)
    else:
        typer.echo(f"{batch['id']} {batch.get('status')} {counts_text(batch)}")
    if batch.get("status") in FAILED_END_STATUSES:
        for line in batch_error_lines(batch):
            typer.echo(f"  {line}", err=True)
        return EXIT_FAILED
    return EXIT_OK


def register(app: typer.Typer) -> None:
    """Mount ``submit``, ``jobs`` and ``keys`` on ``app``."""

    @app.command()
    def submit(
        file: Annotated[
            Path, typer.Argument(exists=True, dir_okay=False, help="Batch input (.jsonl).")
        ],
        endpoint: Annotated[
            str, typer.Option(help="Endpoint every line calls.")
        ] = "/v1/chat/completions",
        deadline: Annotated[
            str | None, typer.Option(help="Finish by this ISO datetime (UTC if no offset).")
        ] = None,
        window: Annotated[
            str | None, typer.Option(help="Completion window like 6h, 24h or 72h.")
        ] = None,
        min_quality: Annotated[
            float | None, typer.Option(help="Lowest model quality for lines with model 'auto'.")
        ] = None,
        sites: Annotated[
            str | None, typer.Option(help="Comma-separated sites the work may run at.")
        ] = None,
        priority: Annotated[
            float | None, typer.Option(help="Weight of delay for this batch (default 1).")
        ] = None,
        metadata: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
        wait: WaitOption = False,
        poll_s: PollOption = 2.0,
        timeout_s: TimeoutOption = None,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Upload a JSONL batch file and create a batch; print its id and status."""
        with exit_on_error():
            options = submit_options(
                deadline=deadline,
                window=window,
                min_quality=min_quality,
                sites=sites,
                priority=priority,
                metadata=metadata or [],
            )
            with make_client(api_url, api_key) as client:
                code = submit_content(
                    client,
                    filename=file.name,
                    content=file.read_bytes(),
                    endpoint=endpoint,
                    options=options,
                    wait=wait,
                    poll_s=poll_s,
                    timeout_s=timeout_s,
                    as_json=as_json,
                )
        raise typer.Exit(code)

    jobs = typer.Typer(help="Declarative nightly jobs (jobs/*.yaml).", no_args_is_help=True)

    @jobs.command("submit")
    def jobs_submit(
        spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Job spec YAML.")],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Check the spec and inputs; send nothing.")
        ] = False,
        wait: WaitOption = False,
        poll_s: PollOption = 2.0,
        timeout_s: TimeoutOption = None,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Build a job's batch file from its inputs and submit it (or only check it)."""
        with exit_on_error():
            job = load_job(spec)
            batch_file = build_batch_file(job, spec.parent)
            now = now_utc()
            if dry_run:
                from scheduler.api.deps import load_configured_fleet
                from scheduler.config import get_settings

                fleet = load_configured_fleet(get_settings())
                if fleet is not None:  # the same checks as the server's POST /v1/batches
                    check_against_fleet(job, batch_file, fleet)
                summary = job_summary(job, batch_file, now)
                if as_json:
                    print_json(summary)
                else:
                    options = summary["options"]
                    typer.echo(
                        f"{job.name}: {plural(batch_file.requests, 'request')} from "
                        f"{plural(len(batch_file.paths), 'file')}, model {job.line_model}, "
                        f"{job.endpoint}, "
                        f"deadline {options.get('deadline', options['completion_window'])} "
                        "(dry run: nothing sent)"
                    )
                raise typer.Exit(EXIT_OK)
            with make_client(api_url, api_key) as client:
                code = submit_content(
                    client,
                    filename=f"{job.name}-{now:%Y%m%dT%H%M%SZ}.jsonl",
                    content=batch_file.content,
                    endpoint=job.endpoint,
                    options=create_options(job, now),
                    wait=wait,
                    poll_s=poll_s,
                    timeout_s=timeout_s,
                    as_json=as_json,
                )
        raise typer.Exit(code)

    app.add_typer(jobs, name="jobs")
