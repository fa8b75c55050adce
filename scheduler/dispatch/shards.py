"""Cutting assignments into shards of whole requests, bounded in requests and GPU-minutes."""

from __future__ import annotations

import math


def shard_sizes(
    n_requests: int, gpu_hours: float, *, max_requests: int, max_gpu_minutes: float
) -> list[int]:
    """Balanced shard sizes for ``n_requests`` carrying ``gpu_hours`` in total.

    Each shard holds at most ``max_requests`` requests and about ``max_gpu_minutes`` of
    GPU time (always at least one request, so one huge request still gets a shard).
    """
    if n_requests <= 0:
        return []
    per_request_min = gpu_hours * 60.0 / n_requests
    by_time = math.floor(max_gpu_minutes / per_request_min) if per_request_min > 0 else n_requests
    cap = max(1, min(max_requests, by_time))
    k = math.ceil(n_requests / cap)
    base, extra = divmod(n_requests, k)
    return [base + (1 if i < extra else 0) for i in range(k)]
