"""Upper bounds of the numbers a request line may carry, shared by every endpoint's checker.

A number beyond them could never run (no served model produces that many tokens or vectors that
wide) and would overflow the store's integer columns and the intake arrays (2^31, 2^63): it is a
line error instead.
"""

from __future__ import annotations

# Tokens a request may ask to generate: beyond any served model's context window (1 Mi).
MAX_OUTPUT_TOKENS = 1 << 20
# Width of an embedding vector a request may ask for.
MAX_EMBEDDING_DIMENSIONS = 1 << 16
# Completions (``n``) one request may ask for; the engines' default ``max_n`` is the same, so a
# line intake accepts is never refused by a worker for its ``n``.
MAX_CHOICES = 16
