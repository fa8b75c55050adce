"""``gridshift run-batch``: a drop-in for ``vllm run-batch`` that runs through gridshift's shard path.

The input (a path or an http(s) URL) is sorted line by line first (``run_batch_lines``: bad
lines become error lines where vLLM writes them); the lines that run are stored and validated as
a batch in the embedded store (SQLite in the data directory), cut into shards queued for one
local pool, and each shard runs through ``run_shard`` (lease, engine, meter, ledger) exactly as
a worker runs it. The output (a path, or an http(s) URL it is uploaded to with PUT) has vLLM's
shape: one line per input line, in input order, error lines included. What ran, the energy
(measured or estimated, labelled), the CO2 and the signal that priced it are printed. Every
exit path, refusals included, shuts the engine down.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from scheduler.config import Settings
from scheduler.domain import Fleet
from scheduler.store.tables import Shard
from workers.run_batch_io import (
    fetch_input,
    is_url,
    metrics_server,
    output_target,
    upload_output,
)
from workers.run_batch_lines import LineSorter, sort_lines
from workers.run_batch_store import (
    POOL,
    SITE,
    Echo,
    report,
    shard_errors,
    signal_lookup,
    submit,
    write_output,
)

log = logging.getLogger(__name__)


# Flags that belong to the model's fleet entry (per model), not to the pool's engine.
MODEL_OPTIONS = ("tool_call_parser", "enable_auto_tool_choice")


@dataclass(frozen=True)
class RunBatchArgs:
    """What ``gridshift run-batch`` was asked to do (the flags of ``vllm run-batch``).

    ``input_file`` and ``output_file`` are local paths or http(s) URLs (GET in, PUT out);
    ``served_model_names`` are the names request lines may use (the first names the model in
    the output; none: ``model`` itself); ``metrics_port`` serves Prometheus metrics during the
    run (``--enable-metrics``), on ``metrics_host`` (all interfaces when None).
    """

    input_file: str | Path
    output_file: str | Path
    model: str
    engine: str = "vllm"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    served_model_names: tuple[str, ...] = ()
    power_w: float = 0.0
    carbon_g_per_kwh: float | None = None
    shard_requests: int = 100_000
    output_tmp_dir: Path | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None

    @property
    def served(self) -> tuple[str, ...]:
        """The names request lines may use; the first is the fleet model's name."""
        return self.served_model_names or (self.model,)


def engine_spec(args: RunBatchArgs) -> dict[str, Any]:
    """The pool's ``engine:`` block for the run (options the flags set, for ``args.engine``)."""
    opts = {
        k: v for k, v in args.engine_options.items() if v is not None and k not in MODEL_OPTIONS
    }
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
        if args.metrics_port is not None:  # vLLM's stat loggers feed its vllm:* metrics
            opts["disable_log_stats"] = False
    return {"kind": args.engine, **opts}


def run_fleet(args: RunBatchArgs, model_name: str) -> Fleet:
    """A one-site, one-pool fleet running ``model_name`` from ``args.model`` on this machine
    (the other served names are aliases of it)."""
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
                **{
                    k: v
                    for k, v in args.engine_options.items()
                    if k in MODEL_OPTIONS and v is not None
                },
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
        "model_aliases": {name: model_name for name in args.served if name != model_name},
    }
    return parse_fleet(raw, where="run-batch fleet")


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


def _run_shards(
    settings: Settings, fleet: Fleet, sessions: Any, cache: Any, batch_id: str, carbon: float | None
) -> None:
    """Run every shard of the batch through the worker's path (lease, engine, meter, ledger)."""
    from scheduler.dispatch.poison import MAX_ATTEMPTS
    from workers.runtime import WorkerRuntime

    runtime = WorkerRuntime(
        settings=settings,
        fleet=fleet,
        sessions=sessions,
        engine_cache=cache,
        signal_lookup=signal_lookup(fleet, carbon),
    )
    with sessions() as s:
        shard_ids = list(
            s.scalars(select(Shard.id).where(Shard.batch_id == batch_id).order_by(Shard.id))
        )
    for shard_id in shard_ids:
        for _ in range(MAX_ATTEMPTS):
            if runtime.run(shard_id).status != "released":
                break


def _execute(
    settings: Settings, args: RunBatchArgs, fleet: Fleet, cache: Any, work: Path, echo: Echo
) -> int:
    """Sort the lines, run those that can run, write and deliver the output; the exit code."""
    from scheduler.engine_options import OptionCheck, engine_kinds_by_model
    from scheduler.intake.catalog import ModelCatalog
    from scheduler.store.db import make_engine, session_factory
    from scheduler.store.migrate import upgrade

    t0 = time.perf_counter()
    source = (
        fetch_input(str(args.input_file), work)
        if is_url(args.input_file)
        else Path(args.input_file)
    )
    sorter = LineSorter(
        args.served, ModelCatalog.of(fleet), OptionCheck(engine_kinds_by_model(fleet))
    )
    plan = sort_lines(source, work / "run.jsonl", sorter)
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        batch_id = None
        if plan.runs:
            name = Path(str(args.input_file)).name or "input.jsonl"
            batch_id = submit(
                sessions, settings, fleet, plan, filename=name, shard_requests=args.shard_requests
            )
            _run_shards(settings, fleet, sessions, cache, batch_id, args.carbon_g_per_kwh)
        target = output_target(args.output_file, args.output_tmp_dir)
        ok, failed, missing = write_output(sessions, batch_id, plan, target)
        for error in shard_errors(sessions, batch_id)[:3]:
            echo(f"a shard failed: {error}")
        echo(
            f"gridshift run-batch: {ok + failed}/{len(plan.order)} lines answered ({ok} ok, "
            f"{failed} errors, {plan.errors} of them refused before running) on engine "
            f"{args.engine}, model {args.served[0]}, batch {batch_id or '-'}, "
            f"{time.perf_counter() - t0:.1f} s; output {args.output_file}"
        )
        report(sessions, batch_id, echo)
    finally:
        engine.dispose()
    if is_url(args.output_file):
        upload_output(target, str(args.output_file))
        target.unlink(missing_ok=True)
    return 1 if missing else 0


def run_batch(
    settings: Settings,
    args: RunBatchArgs,
    *,
    echo: Echo = print,
    engine_cache: Any = None,
) -> int:
    """Run ``args.input_file`` through gridshift's shard path and write ``args.output_file``.

    The engine is shut down on every way out (a refused file, a failed upload, an error),
    after the model load started in the background has ended, so the process always exits.

    Args:
        settings: Data directory and database (the embedded SQLite store by default).
        args: The flags.
        echo: Where the summary goes.
        engine_cache: An ``EngineCache`` to reuse (tests hold one model across runs); it is
            left open.

    Returns:
        0 when every input line has an output line (error lines included, as with vLLM), 1
        when some request has none (its shard failed).

    Raises:
        InvalidInput: the input cannot be read or is not a batch file (nothing ran).
        UploadFailed: the output could not be uploaded (it is kept locally; the message says
            where).
    """
    from workers.engine_cache import EngineCache

    fleet = run_fleet(args, args.served[0])
    cache = engine_cache or EngineCache()
    work = Path(tempfile.mkdtemp(prefix="gridshift-run-batch-", dir=args.output_tmp_dir))
    try:
        with metrics_server(args.metrics_port, args.metrics_host):
            # The model loads (vLLM: seconds of process start-up, mostly waiting) while the
            # file is sorted and the store migrated; the first shard then finds it loaded.
            loading = _Preload(cache, fleet)
            try:
                return _execute(settings, args, fleet, cache, work, echo)
            finally:
                loading.join()
                if engine_cache is None:
                    cache.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
