"""Engine benchmark: completion tokens per second of the transformers engine on the tiny model.

Measures one ``run`` of N greedy chat requests at several ``max_batch_size`` values (after a
warm-up call), and optionally the openai engine against a running server. Usage::

    python benchmarks/engine_bench.py [--requests 64] [--max-tokens 16] [--batch-sizes 1,8,32]
                                      [--base-url URL --served-model NAME --concurrency 1,4]

The tiny model is built (no download) in a temporary directory; its outputs are gibberish but
token counts and timings are real.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from workers.engines import EngineConfig, EngineRequest, InferenceEngine, build_engine
from workers.engines.tiny_model import build_tiny_model


def requests_for(n: int, max_tokens: int) -> list[EngineRequest]:
    """N distinct greedy chat requests."""
    return [
        EngineRequest(
            f"r{i}",
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": f"question {i} about the grid"}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        )
        for i in range(n)
    ]


def measure(engine: InferenceEngine, reqs: list[EngineRequest]) -> tuple[float, int]:
    """Seconds for one run of ``reqs`` and the completion tokens it produced."""
    engine.run(reqs[:2])
    t0 = time.perf_counter()
    results = engine.run(reqs)
    elapsed = time.perf_counter() - t0
    return elapsed, sum(r.output_tokens for r in results)


def main() -> None:
    """Run the benchmark and print one line per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--served-model", default=None, help="model name the server expects")
    args = parser.parse_args()
    reqs = requests_for(args.requests, args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny")
        for size in (int(s) for s in args.batch_sizes.split(",")):
            engine = build_engine(
                EngineConfig("transformers", {"device": "cpu", "max_batch_size": size})
            )
            engine.load("tiny", str(model_dir))
            elapsed, tokens = measure(engine, reqs)
            print(
                f"transformers max_batch_size={size}: {len(reqs)} requests, {tokens} completion "
                f"tokens in {elapsed:.2f} s = {tokens / elapsed:.0f} tok/s"
            )
            engine.close()
        if args.base_url:
            for conc in (int(c) for c in args.concurrency.split(",")):
                engine = build_engine(
                    EngineConfig(
                        "openai",
                        {
                            "base_url": args.base_url,
                            "max_concurrency": conc,
                            "served_model_name": args.served_model,
                        },
                    )
                )
                engine.load("tiny", str(model_dir))
                elapsed, tokens = measure(engine, reqs)
                print(
                    f"openai max_concurrency={conc}: {len(reqs)} requests, {tokens} completion "
                    f"tokens in {elapsed:.2f} s = {tokens / elapsed:.0f} tok/s"
                )
                engine.close()


if __name__ == "__main__":
    main()
