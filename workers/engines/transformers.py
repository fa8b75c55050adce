"""In-process Hugging Face ``transformers`` engine (CPU or GPU): batched, left-padded generation."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.engine_options import refusal_message, refused_options
from scheduler.errors import EngineError, InvalidInput
from scheduler.intake.bounds import MAX_CHOICES
from workers.engines.base import EngineRequest, EngineResult, free_cuda_memory
from workers.engines.openai_shapes import (
    Choice,
    Endpoint,
    GenerationOptions,
    apply_stop,
    endpoint_of,
    error_result,
    parse_messages,
    parse_options,
    parse_prompt,
    response_body,
    success_result,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Prepared:
    index: int
    custom_id: str
    endpoint: Endpoint
    prompt_ids: list[int]
    options: GenerationOptions
    max_new_tokens: int


def load_pretrained(
    auto_class: str,
    model: str,
    source: str,
    *,
    device: str,
    dtype: str,
    local_files_only: bool | None,
) -> tuple[Any, Any, str]:
    """Load a tokenizer and a ``transformers`` ``auto_class`` model onto ``device``, in eval mode.

    Shared by the generation and the embedding engines. Returns (tokenizer, model, device):
    ``device`` "auto" resolves to cuda when available; ``local_files_only`` None means "a local
    directory is local".

    Raises:
        EngineError: torch/transformers are missing, or the weights cannot be loaded.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise EngineError(
            f"the transformers engine needs torch and transformers ({e}); "
            "install the cpu extra: pip install 'gridshift[cpu]'"
        ) from e
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    local = local_files_only if local_files_only is not None else Path(source).is_dir()
    kwargs: dict[str, Any] = {"local_files_only": local}
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local)
        loaded: Any = getattr(transformers, auto_class).from_pretrained(source, **kwargs)
        loaded = loaded.to(device).eval()
    except (OSError, ValueError, RuntimeError) as e:
        raise EngineError(
            f"cannot load model {model!r} from {source!r}: {e}. Check the model's 'weights' "
            "in fleet.yaml (a local directory, or a hub id with HF_HUB_OFFLINE unset)"
        ) from e
    return tokenizer, loaded, device


def tokens_to_reach(decode: Callable[[list[int]], str], tokens: list[int], needle: str) -> int:
    """Return the fewest leading ``tokens`` whose decoded text contains ``needle``.

    Used to count the real tokens up to a stop sequence that was cut post hoc; the search is
    binary because a longer prefix decodes to a longer text. Returns ``len(tokens)`` if even
    the whole sequence does not contain ``needle``.
    """
    lo, hi = 1, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        if needle in decode(tokens[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return hi


class TransformersEngine:
    """Runs chat and completion requests with ``AutoModelForCausalLM.generate``.

    Requests with the same sampling options are batched together (left padding, pad token
    falling back to EOS); seeded sampling runs one request at a time so a seed reproduces its
    output whatever else is in the batch. Per-request problems (bad options, a prompt longer
    than the context) become 400 results; the other requests still run.
    """

    kind = "transformers"

    def __init__(
        self,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 8,
        default_max_tokens: int = 256,
        max_n: int = MAX_CHOICES,
        max_model_len: int | None = None,
        local_files_only: bool | None = None,
    ) -> None:
        """Configure the engine; nothing is loaded until ``load``.

        Args:
            device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
            dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``.
            max_batch_size: Most sequences generated in one ``generate`` call.
            default_max_tokens: Completion tokens when a request sets no ``max_tokens``
                (capped by what is left of the context).
            max_n: Largest ``n`` (choices per request) accepted; larger gets a 400.
            max_model_len: Context length override (default: the model config's).
            local_files_only: Never contact a hub (default: True when weights is a directory).
        """
        if max_batch_size < 1 or default_max_tokens < 1 or max_n < 1:
            raise EngineError("max_batch_size, default_max_tokens and max_n must be >= 1")
        self.device = device
        self.dtype = dtype
        self.max_batch_size = max_batch_size
        self.default_max_tokens = default_max_tokens
        self.max_n = max_n
        self.max_model_len = max_model_len
        self.local_files_only = local_files_only
        self.model_name: str | None = None
        self._weights: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._context_len = 0
        self._pad_id = 0
        self._eos_ids: set[int] = set()

    def load(self, model: str, weights: str | None) -> None:
        """Load ``model`` from ``weights`` (local directory or hub id); no-op if already loaded.

        Raises:
            EngineError: torch/transformers are missing, or the weights cannot be loaded.
        """
        source = weights or model
        if self._model is not None and self._weights == source:
            self.model_name = model
            return
        self.close()
        tokenizer, loaded, device = load_pretrained(
            "AutoModelForCausalLM",
            model,
            source,
            device=self.device,
            dtype=self.dtype,
            local_files_only=self.local_files_only,
        )
        gen = loaded.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.pad_token_id
        if pad is None:
            pad = min(self._eos_ids) if self._eos_ids else 0
        self._pad_id = int(pad)
        self._context_len = int(
            self.max_model_len or getattr(loaded.config, "max_position_embeddings", 0) or 2048
        )
        self._model, self._tokenizer = loaded, tokenizer
        self._weights, self.model_name = source, model
        log.info("transformers engine loaded %s from %s on %s", model, source, device)

    def close(self) -> None:
        """Drop the model and tokenizer (and free GPU memory if any)."""
        if self._model is None:
            return
        self._model = self._tokenizer = None
        self._weights = self.model_name = None
        free_cuda_memory()

    def run(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Run ``requests`` and return one result per request, in order.

        Raises:
            EngineError: no model is loaded.
        """
        if self._model is None or self.model_name is None:
            raise EngineError("no model loaded: call load(model, weights) before run()")
        results: list[EngineResult | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[_Prepared]] = defaultdict(list)
        for i, request in enumerate(requests):
            try:
                prepared = self._prepare(i, request)
            except InvalidInput as e:
                results[i] = error_result(request.custom_id, str(e))
                continue
            groups[self._group_key(prepared)].append(prepared)
        for members in groups.values():
            for start in range(0, len(members), self.max_batch_size):
                chunk = members[start : start + self.max_batch_size]
                for prepared, result in zip(chunk, self._run_chunk(chunk), strict=True):
                    results[prepared.index] = result
        return [r for r in results if r is not None]

    @staticmethod
    def _group_key(p: _Prepared) -> tuple[Any, ...]:
        o = p.options
        if o.greedy:
            return ("greedy",)
        if o.seed is not None:
            return ("seeded", p.index)
        return ("sample", o.temperature, o.top_p, o.n)

    def _prepare(self, index: int, request: EngineRequest) -> _Prepared:
        endpoint = endpoint_of(request.url)
        refused = refused_options(request.body, self.kind)
        if refused:
            raise InvalidInput(refusal_message(refused, self.kind, request.body))
        options = parse_options(request.body, max_n=self.max_n)
        tokenizer = self._tokenizer
        if endpoint == "chat":
            messages = parse_messages(request.body)
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInput(
                    f"model {self.model_name!r} has no chat template; use /v1/completions"
                )
            try:
                text = tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except Exception as e:  # jinja raises its own errors for malformed conversations
                raise InvalidInput(f"the chat template rejected these messages: {e}") from e
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(tokenizer(parse_prompt(request.body))["input_ids"])
        if not ids:
            raise InvalidInput("the prompt is empty after tokenisation; send some text")
        room = self._context_len - len(ids)
        if room < 1:
            raise InvalidInput(
                f"the prompt is {len(ids)} tokens but model {self.model_name!r} has a context "
                f"of {self._context_len}; shorten the prompt"
            )
        if options.max_tokens is not None and options.max_tokens > room:
            raise InvalidInput(
                f"the prompt ({len(ids)} tokens) plus max_tokens ({options.max_tokens}) exceeds "
                f"the context of {self._context_len} tokens; lower max_tokens to <= {room}"
            )
        max_new = options.max_tokens or min(self.default_max_tokens, room)
        return _Prepared(index, request.custom_id, endpoint, ids, options, max_new)

    def _run_chunk(self, chunk: list[_Prepared]) -> list[EngineResult]:
        try:
            return self._generate(chunk)
        except Exception as e:  # one bad sequence must not fail its neighbours: isolate
            if len(chunk) > 1:
                log.warning("batched generation failed (%s); retrying one by one", e)
                return [r for p in chunk for r in self._run_chunk([p])]
            log.exception("generation failed for %s", chunk[0].custom_id)
            return [
                error_result(
                    chunk[0].custom_id,
                    f"generation failed: {e}",
                    status_code=500,
                    code="engine_error",
                )
            ]

    def _generate(self, chunk: list[_Prepared]) -> list[EngineResult]:
        import torch

        options = chunk[0].options
        width = max(len(p.prompt_ids) for p in chunk)
        rows = [[self._pad_id] * (width - len(p.prompt_ids)) + p.prompt_ids for p in chunk]
        mask = [[0] * (width - len(p.prompt_ids)) + [1] * len(p.prompt_ids) for p in chunk]
        device = self._model.device
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor(rows, dtype=torch.long, device=device),
            "attention_mask": torch.tensor(mask, dtype=torch.long, device=device),
            "max_new_tokens": max(p.max_new_tokens for p in chunk),
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._eos_ids) or None,
        }
        per_request = 1
        if options.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            per_request = options.n
            kwargs.update(
                do_sample=True,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=None,
                num_return_sequences=options.n,
            )
            if options.seed is not None:
                torch.manual_seed(options.seed)
        with torch.inference_mode():
            output = self._model.generate(**kwargs)
        generated = output[:, width:].tolist()
        results = []
        for k, prepared in enumerate(chunk):
            sequences = generated[k * per_request : (k + 1) * per_request]
            choices = [self._choice(seq, prepared) for seq in sequences]
            if options.greedy and prepared.options.n > 1:
                choices = choices * prepared.options.n  # greedy decoding gives n equal choices
            body = response_body(
                prepared.endpoint,
                model=self.model_name or "",
                choices=choices,
                prompt_tokens=len(prepared.prompt_ids),
            )
            results.append(success_result(prepared.custom_id, body))
        return results

    def _decode(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def _choice(self, sequence: list[int], prepared: _Prepared) -> Choice:
        tokens = sequence[: prepared.max_new_tokens]
        finish = "length"
        for j, token in enumerate(tokens):
            if token in self._eos_ids:
                tokens, finish = tokens[: j + 1], "stop"  # the EOS token was generated: count it
                break
        text = self._decode(tokens)
        stop = prepared.options.stop
        if stop:
            text, hit = apply_stop(text, stop)
            if hit:
                first = min(tokens_to_reach(self._decode, tokens, s) for s in stop if s)
                tokens, finish = tokens[:first], "stop"
        return Choice(text=text, finish_reason=finish, completion_tokens=len(tokens))


def from_options(options: Mapping[str, Any]) -> TransformersEngine:
    """Build the engine from fleet.yaml ``engine:`` options (unknown keys are an error).

    Raises:
        EngineError: an option is unknown or has the wrong type.
    """
    known = {
        "device",
        "dtype",
        "max_batch_size",
        "default_max_tokens",
        "max_n",
        "max_model_len",
        "local_files_only",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise EngineError(
            f"unknown transformers engine option(s) {unknown}; known: {sorted(known)}"
        )
    try:
        return TransformersEngine(**dict(options))
    except TypeError as e:
        raise EngineError(f"invalid transformers engine options: {e}") from e
