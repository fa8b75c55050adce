"""``gridshift run-batch``: a drop-in for ``vllm run-batch`` that runs through gridshift's shard path.

The input file is stored and validated as a batch in the embedded store (SQLite in the data
directory), cut into shards queued for one local pool, and each shard runs through
``run_shard`` (lease, engine, meter, ledger) exactly as a worker runs it. The output file has
vLLM's shape: one line per input line, in input order, errors included. What ran, the energy
(measured or estimated, labelled), the CO2 and the signal that priced it are printed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from scheduler.config import Settings
from scheduler.domain import Fleet, SlotSignal, is_estimate
from scheduler.errors import InvalidInput
from scheduler.store.tables import Batch, BatchRequest, File, LedgerEntry, Shard, now_utc

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
TENANT = "run-batch"
SITE = "local"
POOL = "local"
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


@dataclass(frozen=True)
class RunBatchArgs:
    """What ``gridshift run-batch`` was asked to do (the flags of ``vllm run-batch``)."""

    input_file: Path
    output_file: Path
    model: str
    engine: str = "vllm"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    served_model_name: str | None = None
    power_w: float = 0.0
    carbon_g_per_kwh: float | None = None
    shard_requests: int = 100_000


def engine_spec(args: RunBatchArgs) -> dict[str, Any]:
    """The pool's ``engine:`` block for the run (options the flags set, for ``args.engine``)."""
    opts = {k: v for k, v in args.engine_options.items() if v is not None}
    if args.engine == "transformers":
        keep = {"dtype", "max_model_len"}
        opts = {k: v for k, v in opts.items() if k in keep}
        opts.setdefault("device", "auto")
    elif args.engine == "openai":
        keep = {"base_url", "api_key_env", "served_model_name"}
        opts = {k: v for k, v in opts.items() if k in keep}
    else:
        opts.pop("base_url", None)
        opts.pop("api_key_env", None)
    return {"kind": args.engine, **opts}


def run_fleet(args: RunBatchArgs, model_name: str) -> Fleet:
    """A one-site, one-pool fleet running ``model_name`` from ``args.model`` on this machine."""
    from scheduler.fleet import parse_fleet

    gpu = "CPU"
    raw = {
        "slot_minutes": 60,
        "sites": [
            {
                "name": SITE,
                "pue": 1.0,
                "signals": {
                    "carbon": {"provider": "synthetic"},
                    "price": {"provider": "synthetic"},
                },
                "pools": [{"name": POOL, "gpu": gpu, "count": 1, "engine": engine_spec(args)}],
            }
        ],
        "models": [
            {
                "name": model_name,
                "quality": 1.0,
                "weights": args.model,
                "profiles": {
                    gpu: {
                        "gpus": 1,
                        "prefill_tok_s": 1000,
                        "decode_tok_s": 100,
                        "power_w": args.power_w,
                    }
                },
            }
        ],
    }
    return parse_fleet(raw, where="run-batch fleet")


def _endpoint_of(path: Path) -> str:
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    break
                if url in ENDPOINTS:
                    return str(url)
                break
    raise InvalidInput(
        f"{path}: the first request line must be a JSON object whose url is one of {ENDPOINTS}"
    )


def _signal_lookup(
    fleet: Fleet, carbon: float | None
) -> Callable[[str, datetime], tuple[SlotSignal, str] | None]:
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


def _submit(sessions: Any, settings: Settings, fleet: Fleet, args: RunBatchArgs) -> str:
    """Store the input, validate it as a batch, queue it as shards for the local pool."""
    from scheduler.dispatch.shards import shard_sizes
    from scheduler.dispatch.slots import slot_floor
    from scheduler.intake.submit import BatchOptions, create_batch, part_id
    from scheduler.store.files import save_file
    from scheduler.store.tenants import create_tenant

    endpoint = _endpoint_of(args.input_file)
    now = now_utc()
    with sessions() as s:
        tenant_id = create_tenant(s, TENANT).id
        s.commit()
        file = save_file(
            s,
            settings.files_dir,
            args.input_file,
            tenant_id=tenant_id,
            filename=args.input_file.name,
            purpose="batch",
        )
        batch = create_batch(
            s,
            fleet,
            tenant_id,
            BatchOptions(input_file_id=file.id, endpoint=endpoint, completion_window="24h"),
            max_requests=settings.max_requests_per_batch,
        )
        if batch.status == "failed":
            errors = (batch.errors or {}).get("data", [])
            s.commit()
            shown = "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in errors[:10])
            raise InvalidInput(f"{args.input_file} is not a valid batch file: {shown}")
        ids = list(
            s.scalars(
                select(BatchRequest.id)
                .where(BatchRequest.batch_id == batch.id)
                .order_by(BatchRequest.line_no)
            )
        )
        sizes = shard_sizes(
            len(ids), 0.0, max_requests=args.shard_requests, max_gpu_minutes=float("inf")
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


def _write_output(sessions: Any, batch_id: str, output: Path) -> tuple[int, int]:
    """OUT in vLLM's shape: every input line's result, in input order (errors included)."""
    with sessions() as s:
        batch = s.get(Batch, batch_id)
        paths = [
            (s.get(File, fid).path if fid and s.get(File, fid) else None)
            for fid in ((batch.output_file_id, batch.error_file_id) if batch else ())
        ]
        order = list(
            s.scalars(
                select(BatchRequest.custom_id)
                .where(BatchRequest.batch_id == batch_id)
                .order_by(BatchRequest.line_no)
            )
        )
    by_id = {line["custom_id"]: line for p in paths for line in _lines(p)}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    ok = failed = 0
    with tmp.open("w") as fh:
        for cid in order:
            line = by_id.get(cid)
            if line is None:
                continue
            status = (line.get("response") or {}).get("status_code")
            ok += status == 200
            failed += status != 200
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    return ok, failed


def _report(sessions: Any, batch_id: str, echo: Echo) -> None:
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
            f"  of which model load ({r.model}): {r.model_load_kwh * 1000:.4f} Wh IT, {how} "
            f"(method: {r.model_load_method})"
        )
    if label == "ESTIMATED" and kwh == 0:
        echo("  nothing could measure this machine and no --power-w was given: pass --power-w W")
    echo(
        f"CO2: {co2:.4f} g location-based at {intensity:.1f} g/kWh "
        f"(signal source: {', '.join(sources)})"
    )


class _Preload(threading.Thread):
    """Load the run's model in the background; a failure is left for the shard to report."""

    def __init__(self, cache: Any, fleet: Fleet) -> None:
        super().__init__(name="gridshift-preload", daemon=True)
        self.cache, self.fleet = cache, fleet
        self.start()

    def run(self) -> None:
        pool = self.fleet.site(SITE).pool(POOL)
        try:
            self.cache.get(pool.engine, self.fleet.models[0])
        except Exception as e:  # the shard's own load reports it with the shard's error
            log.warning("loading the model ahead of the run failed: %s", e)


def run_batch(
    settings: Settings,
    args: RunBatchArgs,
    *,
    echo: Echo = print,
    engine_cache: Any = None,
) -> int:
    """Run ``args.input_file`` through gridshift's shard path and write ``args.output_file``.

    Args:
        settings: Data directory and database (the embedded SQLite store by default).
        args: The flags.
        echo: Where the summary goes.
        engine_cache: An ``EngineCache`` to reuse (tests hold one model across runs).

    Returns:
        0 when every line has a result (error lines included, as with vLLM), 1 otherwise.

    Raises:
        InvalidInput: the input file is not a valid batch file.
    """
    from scheduler.dispatch.poison import MAX_ATTEMPTS
    from scheduler.store.db import make_engine, session_factory
    from scheduler.store.migrate import upgrade
    from workers.engine_cache import EngineCache
    from workers.runtime import WorkerRuntime

    t0 = time.perf_counter()
    model_name = args.served_model_name or args.model
    fleet = run_fleet(args, model_name)
    cache = engine_cache or EngineCache()
    # The model loads (vLLM: seconds of process start-up, mostly waiting) while the store is
    # migrated and the file validated; the first shard then finds it loaded.
    loading = _Preload(cache, fleet)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    try:
        batch_id = _submit(sessions, settings, fleet, args)
    finally:
        loading.join()
    runtime = WorkerRuntime(
        settings=settings,
        fleet=fleet,
        sessions=sessions,
        engine_cache=cache,
        signal_lookup=_signal_lookup(fleet, args.carbon_g_per_kwh),
    )
    with sessions() as s:
        shard_ids = list(
            s.scalars(select(Shard.id).where(Shard.batch_id == batch_id).order_by(Shard.id))
        )
    for shard_id in shard_ids:
        for _ in range(MAX_ATTEMPTS):
            if runtime.run(shard_id).status != "released":
                break
    ok, failed = _write_output(sessions, batch_id, args.output_file)
    with sessions() as s:
        errors = s.scalars(
            select(Shard.last_error).where(Shard.batch_id == batch_id, Shard.status == "failed")
        ).all()
    for error in errors[:3]:
        echo(f"a shard failed: {error}")
    with sessions() as s:
        total = s.get(Batch, batch_id).request_total  # type: ignore[union-attr]
    echo(
        f"gridshift run-batch: {ok + failed}/{total} requests ({ok} ok, {failed} errors) on "
        f"engine {args.engine}, model {model_name}, batch {batch_id}, "
        f"{time.perf_counter() - t0:.1f} s; output {args.output_file}"
    )
    _report(sessions, batch_id, echo)
    if engine_cache is None:
        cache.close()
    engine.dispose()
    return 0 if ok + failed == total else 1
