"""``gridshift batches list|show|cancel|download``: thin commands over the batch API."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli import EXIT_FAILED
from scheduler.client import GridshiftClient
from scheduler.commands.common import (
    ApiKeyOption,
    ApiUrlOption,
    JsonOption,
    batch_error_lines,
    counts_text,
    exit_on_error,
    fail,
    make_client,
    print_batch,
    print_json,
    request_counts,
)
from scheduler.review.units import money, plural, si

BatchIdArgument = Annotated[str, typer.Argument(help="Batch id (batch_...).")]


def format_time(epoch_s: Any) -> str:
    """An epoch timestamp (seconds) or ISO string as ``YYYY-MM-DD HH:MM:SSZ``; '-' if absent."""
    if epoch_s is None or epoch_s == "":
        return "-"
    if isinstance(epoch_s, int | float):
        return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(epoch_s)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _si(value: Any, unit: str) -> str:
    return si(float(value), unit) if isinstance(value, int | float) else "-"


def _impact(totals: dict[str, Any]) -> str:
    """``energy 23 mWh, CO2 1.2 mg, water 40 µL, cost 0.0000063`` from a totals mapping."""
    co2 = f"CO2 {_si(totals.get('co2_g'), 'g')}"
    notes = []
    if totals.get("embodied_co2_g") is not None:
        notes.append(f"of which embodied {_si(totals['embodied_co2_g'], 'g')}")
    if totals.get("co2_market_g") is not None:
        notes.append(f"market-based {_si(totals['co2_market_g'], 'g')}")
    if notes:
        co2 += f" ({'; '.join(notes)})"
    cost = totals.get("cost")
    return (
        f"energy {_si(totals.get('energy_kwh'), 'kWh')}, {co2}, "
        f"water {_si(totals.get('water_l'), 'L')}, "
        f"cost {money(cost) if isinstance(cost, int | float) else '-'} (fleet currency)"
    )


def energy_label(method: str | None) -> str:
    """How the booked figures were obtained, for humans: estimates are always labelled."""
    if method is None or method.startswith("estimat"):
        return "(estimated)"
    if method == "mixed":
        return "(partly measured, partly estimated)"
    return f"(measured: {method})"


def describe_gridshift(gridshift: dict[str, Any]) -> list[str]:
    """Human lines for the batch's ``gridshift`` object: options, plan, progress and impact.

    Planned figures are always estimates; booked (``actual``) figures say whether they were
    measured or estimated, from ``energy_method``.
    """
    lines = [f"  deadline     {format_time(gridshift.get('deadline'))}"]
    if gridshift.get("min_quality") is not None:
        lines.append(f"  min quality  {gridshift['min_quality']}")
    lines.append(f"  sites        {', '.join(gridshift.get('sites') or []) or 'any'}")
    lines.append(f"  priority     {gridshift.get('priority', 1.0)}")
    for part in gridshift.get("parts") or []:
        model = part.get("model") or f"auto (min_quality {part.get('min_quality')})"
        estimated = " (estimated)" if part.get("tokens_estimated", True) else ""
        lines.append(
            f"  part         {model}: {plural(int(part.get('requests') or 0), 'request')}, "
            f"{_num(part.get('input_tokens'))} input + {_num(part.get('output_tokens'))} "
            f"output tokens{estimated}"
        )
    planned = gridshift.get("planned") or {}
    if planned.get("plan_id") is None:
        lines.append("  plan         not planned yet")
    else:
        lines.append(
            f"  plan         #{planned['plan_id']}: "
            f"{plural(int(planned.get('requests') or 0), 'request')} at "
            f"{', '.join(planned.get('sites') or [])}, {format_time(planned.get('first_slot_at'))}"
            f" .. {format_time(planned.get('last_slot_at'))}"
        )
        for slot in planned.get("slots") or []:
            lines.append(
                f"    slot       {format_time(slot.get('slot_start'))} {slot.get('site')}/"
                f"{slot.get('pool')} {slot.get('model')}: "
                f"{plural(int(slot.get('requests') or 0), 'request')} at "
                f"{_num(slot.get('carbon_g_per_kwh'))} gCO2/kWh"
            )
        lines.append(f"  planned      {_impact(planned)} (estimated)")
    shards = gridshift.get("shards") or {}
    if shards:
        lines.append("  shards       " + ", ".join(f"{k} {v}" for k, v in sorted(shards.items())))
    actual = gridshift.get("actual") or {}
    if actual.get("entries"):
        lines.append(
            f"  booked       {_impact(actual)} {energy_label(gridshift.get('energy_method'))}"
        )
    return lines


def _status(batch: dict[str, Any]) -> str:
    """The status, saying so when a finished batch has failed requests (OpenAI still says
    ``completed``: the batch ran, some of its requests did not)."""
    status = str(batch.get("status") or "")
    total, completed, failed = request_counts(batch)
    if failed and status == "completed":
        which = "every request" if completed == 0 else f"{failed} of {total} requests"
        return f"{status}, but {which} failed (see the error file)"
    return status


def batch_row(batch: dict[str, Any]) -> str:
    """One line of ``batches list``: id, status, request counts, created, endpoint, job."""
    job = (batch.get("metadata") or {}).get("gridshift_job", "")
    status = str(batch.get("status") or "")
    if batch.get("status") == "completed" and request_counts(batch)[2]:
        status += "*"  # finished with failed requests
    return (
        f"{batch['id']:<34} {status:<12} {counts_text(batch):<28} "
        f"{format_time(batch.get('created_at'))}  {batch.get('endpoint', '')} {job}".rstrip()
    )


def describe_batch(batch: dict[str, Any]) -> str:
    """A human description of one batch object."""
    total, completed, failed = request_counts(batch)
    pending = max(0, total - completed - failed)
    rows = [
        ("id", batch.get("id")),
        ("status", _status(batch)),
        ("endpoint", batch.get("endpoint")),
        ("window", batch.get("completion_window")),
        ("created", format_time(batch.get("created_at"))),
        ("expires", format_time(batch.get("expires_at"))),
        (
            "finished",
            format_time(
                batch.get("completed_at")
                or batch.get("failed_at")
                or batch.get("cancelled_at")
                or batch.get("expired_at")
            ),
        ),
        (
            "requests",
            f"total {total}, completed {completed}, failed {failed}"
            + (f", pending {pending}" if pending else ""),
        ),
        ("input file", batch.get("input_file_id")),
        ("output file", batch.get("output_file_id") or "-"),
        ("error file", batch.get("error_file_id") or "-"),
    ]
    metadata = batch.get("metadata") or {}
    if metadata:
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in sorted(metadata.items()))))
    lines = [f"{name:<12} {value}" for name, value in rows]
    lines += [f"error        {line}" for line in batch_error_lines(batch)]
    gridshift = batch.get("gridshift")
    if isinstance(gridshift, dict) and gridshift:
        lines.append("gridshift")
        lines += describe_gridshift(gridshift)
    return "\n".join(lines)


def _download(client: GridshiftClient, file_id: str, target: str) -> int:
    if target == "-":
        return client.download_file(file_id, sys.stdout.buffer)
    return client.download_file_to(file_id, Path(target))


def register(app: typer.Typer) -> None:
    """Mount the ``batches`` group on ``app``."""
    batches = typer.Typer(help="List, inspect, cancel and download batches.", no_args_is_help=True)

    @batches.command("list")
    def list_(
        limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
        all_: Annotated[bool, typer.Option("--all", help="Every batch (follows pages).")] = False,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """List your batches, newest first."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            if all_:
                data = list(client.iter_batches())
            else:
                data = list(client.list_batches(limit=limit).get("data") or [])
        if as_json:
            print_json({"object": "list", "data": data})
            return
        for b in data:
            typer.echo(batch_row(b))
        if any(b.get("status") == "completed" and request_counts(b)[2] for b in data):
            typer.echo(
                "* completed with failed requests: `gridshift batches show ID` says which",
                err=True,
            )

    @batches.command("show")
    def show(
        batch_id: BatchIdArgument,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Show one batch: status, counts, files and gridshift's plan, energy, CO2 and water."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            batch = client.get_batch(batch_id)
        if as_json:
            print_json(batch)
        else:
            typer.echo(describe_batch(batch))

    @batches.command("cancel")
    def cancel(
        batch_id: BatchIdArgument,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Cancel a batch (work not yet started is dropped; finished results are kept)."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            batch = client.cancel_batch(batch_id)
        print_batch(batch, as_json=as_json)

    @batches.command("download")
    def download(
        batch_id: BatchIdArgument,
        output: Annotated[
            str | None, typer.Option(help="Output file ('-' for stdout; default ID_output.jsonl).")
        ] = None,
        errors: Annotated[
            str | None, typer.Option(help="Error file (default ID_errors.jsonl, if any).")
        ] = None,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Download a batch's output file and, when there is one, its error file."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            batch = client.get_batch(batch_id)
            output_id, error_id = batch.get("output_file_id"), batch.get("error_file_id")
            if not output_id and not error_id:
                raise fail(
                    f"batch {batch_id} is {batch.get('status')} and has no output or error file "
                    f"yet; wait for it to finish (`gridshift batches show {batch_id}`)",
                    EXIT_FAILED,
                )
            for file_id, target, kind in (
                (output_id, output or f"{batch_id}_output.jsonl", "output"),
                (error_id, errors or f"{batch_id}_errors.jsonl", "errors"),
            ):
                if file_id:
                    size = _download(client, file_id, target)
                    typer.echo(f"{kind}: {target} ({size} bytes)", err=True)

    app.add_typer(batches, name="batches")
