"""Orchestration overhead of ``run_shard`` per request, against an ESTIMATED GPU engine time.

Runs a 1,000-request shard through the real execution path (lease claim, reading requests by
byte offset, per-shard output files, the ledger transaction, batch finalization with output
files) with ``EchoEngine``, a benchmarking engine that answers instantly, so what is left is
gridshift's own work. The engine time it is compared with is an ESTIMATE of a real GPU run of
the same shard from the model profile (8B-class instruct model on one H100: prefill 30,000
tok/s, decode 3,500 tok/s per replica), not a measurement.

    python benchmarks/exec_bench.py [--requests 1000] [--repeats 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update

from scheduler.config import Settings
from scheduler.domain import Fleet, ShardStatus, SlotSignal
from scheduler.intake.submit import BatchOptions, create_batch
from scheduler.samples import load_sample_fleet
from scheduler.store.db import make_engine, session_factory
from scheduler.store.files import save_file
from scheduler.store.migrate import upgrade
from scheduler.store.tables import BatchRequest, Shard, now_utc
from scheduler.store.tenants import create_tenant
from workers.energy import build_meter
from workers.engine_cache import EngineCache
from workers.engines.echo import EchoEngine
from workers.execute import run_shard

PROMPT = (
    "Summarise this support ticket in one sentence for the morning shift. The customer reports "
    "that exports of the monthly invoice fail with a timeout after the last update; they tried "
    "twice from two browsers, and the account has about four thousand line items this month. "
) * 2
MAX_TOKENS = 256
PROFILE = {"prefill_tok_s": 30_000.0, "decode_tok_s": 3_500.0, "gpus": 1}


def _batch(settings: Settings, fleet: Fleet, n: int, tmp: Path) -> tuple[str, int, int]:
    sessions = session_factory(make_engine(settings.resolved_database_url))
    path = tmp / f"bench-{time.time_ns()}.jsonl"
    with path.open("w") as fh:
        for i in range(n):
            body = {
                "model": "tiny-chat",
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": MAX_TOKENS,
            }
            fh.write(
                json.dumps(
                    {
                        "custom_id": f"b{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    with sessions() as s:
        tenant = create_tenant(s, "bench").id
        s.commit()
    with sessions() as s:
        f = save_file(
            s, settings.files_dir, path, tenant_id=tenant, filename=path.name, purpose="batch"
        )
    with sessions() as s, s.begin():
        b = create_batch(
            s,
            fleet,
            tenant,
            BatchOptions(input_file_id=f.id, endpoint="/v1/chat/completions"),
            max_requests=n,
        )
        shard_id = f"shard_bench_{time.time_ns()}"
        s.add(
            Shard(
                id=shard_id,
                batch_id=b.id,
                part_id=f"{b.id}~tiny-chat",
                site="gb-london",
                pool="cpu",
                model="tiny-chat",
                slot_start=datetime.now(UTC),
                status=ShardStatus.QUEUED.value,
                request_count=n,
                attempts=0,
                created_at=now_utc(),
                queued_at=now_utc(),
            )
        )
        s.flush()
        s.execute(
            update(BatchRequest).where(BatchRequest.batch_id == b.id).values(shard_id=shard_id)
        )
        tokens_in = sum(
            s.scalars(select(BatchRequest.input_tokens_est).where(BatchRequest.batch_id == b.id))
        )
    return shard_id, int(tokens_in), n * MAX_TOKENS


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--database-url", default="", help="default: SQLite in a temporary directory")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        settings = Settings(
            data_dir=tmp / "data", database_url=args.database_url or f"sqlite:///{tmp / 'bench.db'}"
        )
        upgrade(make_engine(settings.resolved_database_url))
        sessions = session_factory(make_engine(settings.resolved_database_url))
        fleet = load_sample_fleet()
        cache = EngineCache(lambda _cfg: EchoEngine())
        overheads, engines = [], []
        for _ in range(args.repeats):
            shard_id, tok_in, max_out = _batch(settings, fleet, args.requests, tmp)
            t0 = time.perf_counter()
            outcome = run_shard(
                shard_id,
                session_factory=sessions,
                settings=settings,
                fleet=fleet,
                engine_cache=cache,
                meter_factory=lambda _s, _p, _m: build_meter([], profile_power_w=35.0, gpus=1),
                worker_id="bench",
                signal_lookup=lambda site, slot: (
                    SlotSignal(
                        time=slot,
                        site=site,
                        carbon_g_per_kwh=250.0,
                        price_per_kwh=0.1,
                        renewable_kw=0.0,
                    ),
                    "bench-constant",
                ),
            )
            total = time.perf_counter() - t0
            assert outcome.status == "done" and outcome.batch_finished, outcome
            overheads.append(total - outcome.engine_s)
            engines.append(outcome.engine_s)
        overhead_s = statistics.median(overheads)
        tok_out = max_out * 0.6  # expected_output_fraction of max_tokens
        gpu_engine_s = PROFILE["gpus"] * (
            tok_in / PROFILE["prefill_tok_s"] + tok_out / PROFILE["decode_tok_s"]
        )
    db = "PostgreSQL" if settings.resolved_database_url.startswith("postgresql") else "SQLite"
    print(f"shard of {args.requests} requests on {db}, median of {args.repeats} runs")
    print(
        f"  orchestration overhead: {overhead_s * 1000:.1f} ms total, {overhead_s * 1000 / args.requests:.3f} ms/request (target < 1 ms)"
    )
    print(f"  echo engine time (excluded): {statistics.median(engines) * 1000:.1f} ms")
    print(
        f"  ESTIMATED GPU engine time for the same shard (H100, 8B profile, {tok_in} input + {tok_out:.0f} output tokens): {gpu_engine_s:.1f} s"
    )
    print(
        f"  overhead / estimated engine time: {100 * overhead_s / gpu_engine_s:.3f} % (target < 2 %)"
    )


if __name__ == "__main__":
    main()
