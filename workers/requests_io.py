"""Running a shard's requests on an engine: read by byte offset, whole shard or chunks, isolation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scheduler.errors import EngineError, LeaseLost, TransientEngineError
from workers.engines.base import EngineRequest, EngineResult, InferenceEngine

CHUNK_REQUESTS = 16
TRANSIENT_RETRIES = 2


def read_requests(path: Path, index: Sequence[tuple[str, int, int]]) -> list[EngineRequest]:
    """Read request lines from the input file by byte offset (no full scan of the file)."""
    out = []
    with path.open("rb") as fh:
        for custom_id, offset, length in index:
            fh.seek(offset)
            line = json.loads(fh.read(length))
            out.append(EngineRequest(custom_id=custom_id, url=line["url"], body=line["body"]))
    return out


def _run_chunk(engine: InferenceEngine, chunk: Sequence[EngineRequest]) -> list[EngineResult]:
    for retry in range(TRANSIENT_RETRIES + 1):
        try:
            return engine.run(chunk)
        except TransientEngineError:
            if retry == TRANSIENT_RETRIES:
                raise
            time.sleep(0.5 * 2**retry)
        except EngineError as e:
            if len(chunk) > 1:  # isolate the request the engine refuses
                return [r for req in chunk for r in _run_chunk(engine, [req])]
            return [
                EngineResult(
                    custom_id=chunk[0].custom_id,
                    status_code=500,
                    error={"code": "engine_error", "message": str(e)},
                )
            ]
    raise AssertionError("unreachable")


def run_requests(
    engine: InferenceEngine,
    requests: Sequence[EngineRequest],
    *,
    lease_lost: Callable[[], bool] = lambda: False,
) -> list[EngineResult]:
    """Run ``requests`` on ``engine``, checking that the lease is still held.

    An engine that batches by itself (``whole_shard``, vLLM) gets the whole shard in one call,
    so its scheduler always has work, and polls ``lease_lost`` between its steps; it isolates
    bad requests itself and a failure it raises fails the attempt. Other engines get chunks,
    with the lease checked between them.

    Raises:
        LeaseLost: the heartbeat found the lease taken.
        TransientEngineError: the engine kept failing transiently.
        EngineError: a whole-shard engine failed as a whole.
    """
    if getattr(engine, "whole_shard", False):
        if lease_lost():
            raise LeaseLost("the lease was lost before running; stopping this attempt")
        run: Callable[..., list[EngineResult]] = engine.run
        return run(requests, cancelled=lease_lost)
    results: list[EngineResult] = []
    for i in range(0, len(requests), CHUNK_REQUESTS):
        if lease_lost():
            raise LeaseLost("the lease was lost while running; stopping this attempt")
        results.extend(_run_chunk(engine, requests[i : i + CHUNK_REQUESTS]))
    return results
