"""In-process vLLM engine: one ``vllm.LLM`` per worker process, held across shards (GPU extra)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from scheduler.errors import EngineError, InvalidInput
from workers.engines.base import EngineRequest, EngineResult, free_cuda_memory
from workers.engines.openai_shapes import (
    Choice,
    Endpoint,
    GenerationOptions,
    endpoint_of,
    error_result,
    parse_messages,
    parse_options,
    parse_prompt,
    response_body,
    success_result,
)

log = logging.getLogger(__name__)

GPU_EXTRA_HINT = "install the gpu extra: pip install 'gridshift[gpu]'"

LLM_OPTIONS = frozenset(
    {
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "dtype",
        "quantization",
        "enforce_eager",
        "seed",
        "max_num_seqs",
        "trust_remote_code",
        "swap_space",
        "kv_cache_dtype",
        "enable_prefix_caching",
    }
)


class CompletionOutputLike(Protocol):
    """The fields of ``vllm.outputs.CompletionOutput`` this engine reads."""

    @property
    def index(self) -> int:
        """Position of this choice."""

    @property
    def text(self) -> str:
        """Generated text (stop string excluded)."""

    @property
    def token_ids(self) -> Sequence[int]:
        """Generated token ids."""

    @property
    def finish_reason(self) -> str | None:
        """``stop``, ``length`` or None."""


class RequestOutputLike(Protocol):
    """The fields of ``vllm.outputs.RequestOutput`` this engine reads."""

    @property
    def prompt_token_ids(self) -> Sequence[int] | None:
        """Token ids of the (templated) prompt."""

    @property
    def outputs(self) -> Sequence[CompletionOutputLike]:
        """One output per choice."""


def sampling_kwargs(options: GenerationOptions, *, default_max_tokens: int) -> dict[str, Any]:
    """Map a request's options to ``vllm.SamplingParams`` keyword arguments.

    Temperature 0 is vLLM's greedy decoding; ``stop`` is handled by vLLM itself (the stop
    string is not included in the text, as with OpenAI).
    """
    kwargs: dict[str, Any] = {
        "n": options.n,
        "max_tokens": options.max_tokens or default_max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "stop": list(options.stop) or None,
    }
    if options.seed is not None:
        kwargs["seed"] = options.seed
    return kwargs


def choices_of(output: RequestOutputLike) -> tuple[int, list[Choice]]:
    """Return the prompt token count and the choices (by index) of one vLLM request output."""
    prompt_tokens = len(output.prompt_token_ids or ())
    choices = [
        Choice(
            text=o.text,
            finish_reason=o.finish_reason or "stop",
            completion_tokens=len(o.token_ids),
        )
        for o in sorted(output.outputs, key=lambda o: o.index)
    ]
    return prompt_tokens, choices


_Item = TypeVar("_Item")


def run_isolated(
    items: Sequence[_Item],
    call: Callable[[Sequence[_Item]], list[EngineResult]],
    reject: Callable[[_Item, Exception], EngineResult],
) -> list[EngineResult]:
    """Run ``items`` in one ``call``; if it raises ``ValueError``, split to isolate the culprits.

    vLLM validates a whole ``generate``/``chat`` call at once (e.g. a prompt longer than
    ``max_model_len`` raises ``ValueError``); halving the batch until single items remain
    turns that into a per-request failure while the others still run in batches.
    """
    if not items:
        return []
    try:
        return call(items)
    except ValueError as e:
        if len(items) == 1:
            return [reject(items[0], e)]
        mid = len(items) // 2
        return run_isolated(items[:mid], call, reject) + run_isolated(items[mid:], call, reject)


@dataclass(frozen=True, slots=True)
class _Prepared:
    index: int
    custom_id: str
    endpoint: Endpoint
    payload: Any  # list of messages (chat) or the prompt string (completion)
    params: dict[str, Any]


class VLLMEngine:
    """Runs requests with ``vllm.LLM.chat`` / ``LLM.generate`` on the GPUs of this process.

    vLLM keeps its GPU memory for the life of the process, so a worker holds one model and
    ``load`` of another model (between shards only) tears the old one down first; planning
    keeps a pool on one model for as long as it can.
    """

    kind = "vllm"

    def __init__(
        self, *, default_max_tokens: int = 1024, max_n: int = 16, **llm_options: Any
    ) -> None:
        """Configure the engine; vLLM is imported and the model loaded only in ``load``.

        Args:
            default_max_tokens: Completion tokens when a request sets no ``max_tokens``.
            max_n: Largest ``n`` accepted; larger gets a 400.
            **llm_options: Passed to ``vllm.LLM`` (``tensor_parallel_size``,
                ``gpu_memory_utilization``, ``max_model_len``, ``dtype``, ...).

        Raises:
            EngineError: an option is not one this engine passes to ``vllm.LLM``.
        """
        unknown = sorted(set(llm_options) - LLM_OPTIONS)
        if unknown:
            raise EngineError(
                f"unknown vllm engine option(s) {unknown}; known: {sorted(LLM_OPTIONS)}"
            )
        self.default_max_tokens = default_max_tokens
        self.max_n = max_n
        self.llm_options = dict(llm_options)
        self.model_name: str | None = None
        self._source: str | None = None
        self._llm: Any = None
        self._sampling_params: Any = None

    def load(self, model: str, weights: str | None) -> None:
        """Hold ``model`` (from ``weights``, a local path or hub id); no-op if already held.

        Raises:
            EngineError: vLLM is not installed, or the model cannot be loaded.
        """
        source = weights or model
        if self._llm is not None and self._source == source:
            self.model_name = model
            return
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise EngineError(f"the vllm engine needs vLLM ({e}); {GPU_EXTRA_HINT}") from e
        self.close()
        try:
            self._llm = LLM(model=source, **self.llm_options)
        except (OSError, ValueError, RuntimeError) as e:
            raise EngineError(
                f"vLLM cannot load model {model!r} from {source!r}: {e}. Check the model's "
                "'weights' in fleet.yaml and the engine options (gpu_memory_utilization, "
                "max_model_len, tensor_parallel_size)"
            ) from e
        self._sampling_params = SamplingParams
        self._source, self.model_name = source, model
        log.info("vllm engine loaded %s from %s", model, source)

    def close(self) -> None:
        """Drop the ``LLM`` and free what vLLM lets go of in-process."""
        if self._llm is None:
            return
        self._llm = None
        self._source = self.model_name = None
        gc.collect()
        free_cuda_memory()

    def run(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Run ``requests`` (chat ones in one ``LLM.chat``, completions in one ``LLM.generate``).

        Raises:
            EngineError: no model is loaded, or vLLM failed as a whole.
        """
        if self._llm is None:
            raise EngineError("no model loaded: call load(model, weights) before run()")
        results: list[EngineResult | None] = [None] * len(requests)
        chats: list[_Prepared] = []
        completions: list[_Prepared] = []
        for i, request in enumerate(requests):
            try:
                prepared = self._prepare(i, request)
            except InvalidInput as e:
                results[i] = error_result(request.custom_id, str(e))
                continue
            (chats if prepared.endpoint == "chat" else completions).append(prepared)
        for group, call in ((chats, self._chat), (completions, self._generate)):
            try:
                done = run_isolated(group, call, self._reject)
            except (RuntimeError, TypeError) as e:
                raise EngineError(f"vLLM failed running {len(group)} requests: {e}") from e
            for prepared, result in zip(group, done, strict=True):
                results[prepared.index] = result
        return [r for r in results if r is not None]

    def _prepare(self, index: int, request: EngineRequest) -> _Prepared:
        endpoint = endpoint_of(request.url)
        options = parse_options(request.body, max_n=self.max_n)
        payload = parse_messages(request.body) if endpoint == "chat" else parse_prompt(request.body)
        params = sampling_kwargs(options, default_max_tokens=self.default_max_tokens)
        return _Prepared(index, request.custom_id, endpoint, payload, params)

    def _params(self, group: Sequence[_Prepared]) -> list[Any]:
        return [self._sampling_params(**p.params) for p in group]

    def _chat(self, group: Sequence[_Prepared]) -> list[EngineResult]:
        outputs = self._llm.chat(
            [p.payload for p in group], sampling_params=self._params(group), use_tqdm=False
        )
        return self._results(group, outputs)

    def _generate(self, group: Sequence[_Prepared]) -> list[EngineResult]:
        outputs = self._llm.generate(
            [p.payload for p in group], sampling_params=self._params(group), use_tqdm=False
        )
        return self._results(group, outputs)

    def _results(
        self, group: Sequence[_Prepared], outputs: Sequence[RequestOutputLike]
    ) -> list[EngineResult]:
        if len(outputs) != len(group):
            raise EngineError(f"vLLM returned {len(outputs)} outputs for {len(group)} requests")
        return [
            result_of(p.custom_id, p.endpoint, out, model=self.model_name or "")
            for p, out in zip(group, outputs, strict=True)
        ]

    @staticmethod
    def _reject(prepared: _Prepared, error: Exception) -> EngineResult:
        return error_result(prepared.custom_id, f"vLLM rejected this request: {error}")


def result_of(
    custom_id: str, endpoint: Endpoint, output: RequestOutputLike, *, model: str
) -> EngineResult:
    """Turn one vLLM request output into a 200 result with an OpenAI body and real counts."""
    prompt_tokens, choices = choices_of(output)
    body = response_body(endpoint, model=model, choices=choices, prompt_tokens=prompt_tokens)
    return success_result(custom_id, body)


def from_options(options: Mapping[str, Any]) -> VLLMEngine:
    """Build the engine from fleet.yaml ``engine:`` options.

    Raises:
        EngineError: an option is unknown or has the wrong type.
    """
    try:
        return VLLMEngine(**dict(options))
    except TypeError as e:
        raise EngineError(f"invalid vllm engine options: {e}") from e
