"""``gridshift run-batch``'s use of the embedded store: the batch in, the output and ledger out."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from scheduler.config import Settings
from scheduler.domain import Fleet, SlotSignal, is_estimate
from scheduler.errors import InvalidInput
from scheduler.store.tables import Batch, BatchRequest, File, LedgerEntry, Shard, now_utc
from workers.run_batch_lines import LinePlan

Echo = Callable[[str], None]
TENANT = "run-batch"
SITE = "local"
POOL = "local"


def signal_lookup(
    fleet: Fleet, carbon: float | None
) -> Callable[[str, datetime], tuple[SlotSignal, str] | None]:
    """The run's carbon signal: the synthetic one of the local site, or ``carbon`` as given."""
    from scheduler.forecasts.synthetic import synthetic_signals

    def lookup(site: str, slot: datetime) -> tuple[SlotSignal, str] | None:
        sig = synthetic_signals(fleet, slot, 1)[(site, slot)]
        if carbon is None:
            return sig, sig.source
        given = SlotSignal(
            time=slot,
            site=site,
            carbon_g_per_kwh=carbon,
            price_per_kwh=sig.price_per_kwh,
            renewable_kw=0.0,
            source="given",
        )
        return given, "given"

    return lookup


def submit(
    sessions: Any,
    settings: Settings,
    fleet: Fleet,
    plan: LinePlan,
    *,
    filename: str,
    shard_requests: int,
) -> str:
    """Store the lines that run (``plan.kept``) as a batch, queued as shards for the local pool.

    Raises:
        InvalidInput: the batch was refused although every line passed the line pass (a
            check of the whole file, such as the request limit).
    """
    from scheduler.dispatch.shards import shard_sizes
    from scheduler.dispatch.slots import slot_floor
    from scheduler.intake.submit import BatchOptions, create_batch, part_id
    from scheduler.store.files import save_file
    from scheduler.store.tenants import create_tenant

    now = now_utc()
    with sessions() as s:
        tenant_id = create_tenant(s, TENANT).id
        s.commit()
        file = save_file(
            s,
            settings.files_dir,
            plan.kept,
            tenant_id=tenant_id,
            filename=filename,
            purpose="batch",
        )
        batch = create_batch(
            s,
            fleet,
            tenant_id,
            BatchOptions(input_file_id=file.id, endpoint=plan.endpoint, completion_window="24h"),
            max_requests=max(settings.max_requests_per_batch, plan.runs),
        )
        if batch.status == "failed":
            errors = (batch.errors or {}).get("data", [])
            s.commit()
            shown = "; ".join(f"{e.get('message')}" for e in errors[:10])
            raise InvalidInput(f"{filename} could not become a batch: {shown}")
        ids = list(
            s.scalars(
                select(BatchRequest.id)
                .where(BatchRequest.batch_id == batch.id)
                .order_by(BatchRequest.line_no)
            )
        )
        sizes = shard_sizes(
            len(ids), 0.0, max_requests=shard_requests, max_gpu_minutes=float("inf")
        )
        start = 0
        slot = slot_floor(now, fleet.slot_minutes)
        for k, size in enumerate(sizes):
            shard = Shard(
                id=f"shard_{batch.id[-16:]}_{k}",
                batch_id=batch.id,
                part_id=part_id(batch.id, fleet.models[0].name),
                site=SITE,
                pool=POOL,
                model=fleet.models[0].name,
                slot_start=slot,
                status="queued",
                request_count=size,
                attempts=0,
                created_at=now,
                queued_at=now,
            )
            s.add(shard)
            s.flush()
            chunk = ids[start : start + size]
            start += size
            for i in range(0, len(chunk), 500):
                s.query(BatchRequest).filter(BatchRequest.id.in_(chunk[i : i + 500])).update(
                    {BatchRequest.shard_id: shard.id}, synchronize_session=False
                )
        s.commit()
        return batch.id


def _lines(path: str | None) -> Iterator[dict[str, Any]]:
    if not path or not Path(path).exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def _results(sessions: Any, batch_id: str | None) -> dict[str, dict[str, Any]]:
    """The batch's output and error lines by custom_id (empty when nothing ran)."""
    if batch_id is None:
        return {}
    with sessions() as s:
        batch = s.get(Batch, batch_id)
        paths = [
            (s.get(File, fid).path if fid and s.get(File, fid) else None)
            for fid in ((batch.output_file_id, batch.error_file_id) if batch else ())
        ]
    return {line["custom_id"]: line for p in paths for line in _lines(p)}


def write_output(
    sessions: Any, batch_id: str | None, plan: LinePlan, output: Path
) -> tuple[int, int, int]:
    """OUT in vLLM's shape: every input line's result in input order, error lines included.

    Returns:
        ``(ok, errors, missing)``: lines answered 200, lines answered otherwise, and request
        lines with no result at all (their shard failed).
    """
    by_id = _results(sessions, batch_id)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    ok = failed = missing = 0
    with tmp.open("w") as fh:
        for cid, error in plan.order:
            line = error if error is not None else by_id.get(cid)
            if line is None:
                missing += 1
                continue
            status = (line.get("response") or {}).get("status_code")
            ok += status == 200
            failed += status != 200
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    return ok, failed, missing


def shard_errors(sessions: Any, batch_id: str | None) -> list[str]:
    """The last error of each failed shard of the batch."""
    if batch_id is None:
        return []
    with sessions() as s:
        return [
            str(e)
            for e in s.scalars(
                select(Shard.last_error).where(Shard.batch_id == batch_id, Shard.status == "failed")
            )
        ]


def report(sessions: Any, batch_id: str | None, echo: Echo) -> None:
    """Print what the ledger booked for the run: tokens, energy (labelled), CO2 and source."""
    rows: list[LedgerEntry] = []
    if batch_id is not None:
        with sessions() as s:
            rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.batch_id == batch_id)))
    if not rows:
        echo("ledger: nothing booked (no shard completed)")
        return
    kwh = sum(r.facility_energy_kwh for r in rows)
    co2 = sum(r.co2_location_g for r in rows)
    methods = sorted({r.energy_method for r in rows})
    sources = sorted({r.carbon_source for r in rows})
    tokens_in = sum(r.input_tokens for r in rows)
    tokens_out = sum(r.output_tokens for r in rows)
    intensity = sum(r.carbon_g_per_kwh for r in rows) / len(rows)
    label = "MEASURED" if all(m.startswith("measured") for m in methods) else "ESTIMATED"
    echo(
        f"tokens: {tokens_in} in, {tokens_out} out (from the engine's outputs); "
        f"ledger rows: {len(rows)}"
    )
    echo(f"energy: {kwh * 1000:.4f} Wh facility, {label} (method: {', '.join(methods)})")
    loads = [r for r in rows if r.model_load_kwh is not None]
    for r in loads:
        how = "ESTIMATED" if is_estimate(r.model_load_method or "estimated") else "MEASURED"
        echo(
            f"  of which model load ({r.model}): {(r.model_load_kwh or 0.0) * 1000:.4f} Wh IT, {how} "
            f"(method: {r.model_load_method})"
        )
    if label == "ESTIMATED" and kwh == 0:
        echo("  nothing could measure this machine and no --power-w was given: pass --power-w W")
    echo(
        f"CO2: {co2:.4f} g location-based at {intensity:.1f} g/kWh "
        f"(signal source: {', '.join(sources)})"
    )
