"""Embeddings benchmark: gridshift's ``transformers`` embedding engine against a direct loop.

On the tiny model (built offline; 32-dim vectors), N single-text ``/v1/embeddings`` requests go
through the engine's ``run`` (request parsing, batched forward, masked mean pooling,
normalisation, OpenAI body) and the same texts through the peer: ``AutoModel`` forward in
batches of 32 with masked mean pooling and normalisation, nothing else. Prints inputs per second
for both and the ratio (peer time / gridshift time; 1.0 = as fast). Usage::

    python benchmarks/embed_bench.py [--requests 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from workers.engines import EngineConfig, EngineRequest, build_engine
from workers.engines.tiny_model import build_tiny_model


def texts_for(n: int) -> list[str]:
    """N distinct short documents."""
    return [
        f"document {i}: the grid is clean at night and solar at noon, item {i * 7}"
        for i in range(n)
    ]


def requests_for(texts: list[str]) -> list[EngineRequest]:
    """One embeddings request per text."""
    return [
        EngineRequest(f"e{i}", "/v1/embeddings", {"model": "tiny-embed", "input": t})
        for i, t in enumerate(texts)
    ]


def timed(call: Any) -> float:
    """Seconds for one call (after a warm-up call)."""
    call()
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def transformers_peer(model_dir: Path, texts: list[str], batch: int) -> Any:
    """The direct transformers loop: tokenise, forward, masked mean, in batches."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    ids = [tok(t)["input_ids"] for t in texts]

    def run() -> None:
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            width = max(len(x) for x in chunk)
            rows = torch.tensor([x + [0] * (width - len(x)) for x in chunk])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk])
            with torch.inference_mode():
                h = model(input_ids=rows, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).tolist()

    return run


def main() -> None:
    """Run the comparisons and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=512)
    args = parser.parse_args()
    texts = texts_for(args.requests)
    reqs = requests_for(texts)
    with tempfile.TemporaryDirectory() as tmp:
        small = build_tiny_model(Path(tmp) / "tiny")
        engine = build_engine(
            EngineConfig(kind="transformers", options={"device": "cpu"}, task="embed")
        )
        engine.load("tiny-embed", str(small))
        ours = timed(lambda: engine.run(reqs))
        peer = timed(transformers_peer(small, texts, 32))
        print(f"{args.requests} single-text embeddings requests, tiny model, CPU")
        print(
            f"transformers: gridshift {args.requests / ours:,.0f}/s, direct {args.requests / peer:,.0f}/s, "
            f"ratio {peer / ours:.2f} (1.0 = as fast as the direct loop)"
        )


if __name__ == "__main__":
    main()
