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
# Characters one token may cover at most, in any tokenizer a fleet model uses (byte-level BPE
# vocabularies top out near 128 bytes per token; a character is at least one byte). A prompt of
# C characters therefore needs at least C // MAX_CHARS_PER_TOKEN tokens whatever the tokenizer:
# the lower bound intake and the planner hold against a model's context. Deliberately loose: it
# refuses only what can never fit; a prompt that fits this bound but not the model's real
# tokenizer fails its own line at the worker (a 400 result, as vLLM's server answers).
MAX_CHARS_PER_TOKEN = 256


def min_prompt_tokens(chars: int) -> int:
    """Tokens a prompt of ``chars`` characters needs at least, whatever the tokenizer."""
    return chars // MAX_CHARS_PER_TOKEN
