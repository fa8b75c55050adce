"""Which request options each engine kind honours: the one table intake and engines share.

A request option is honoured by the engine that runs it or refused with a clear error, never
silently dropped. ``openai`` forwards the body to an OpenAI-compatible server, which then
honours or refuses each option itself (``None`` below). docs/workers.md prints this table.

Tools (``tools``, ``tool_choice``, ``parallel_tool_calls`` and histories holding ``tool_calls``
or ``role: tool`` messages) are honoured by the vLLM engine only for a model whose fleet entry
names a ``tool_call_parser``: such a pool counts as the kind ``VLLM_TOOLS`` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.domain import Fleet

# Keys that carry the request itself or change nothing about the generated text (the caller's
# identifiers and a hosted service's tier and prompt-cache routing are accepted and ignored).
PASSIVE_KEYS = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "metadata",
        "store",
        "stream",
        "service_tier",
    }
)

_COMMON = frozenset(
    {"n", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed"}
)

VLLM_OPTIONS = _COMMON | frozenset(
    {
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        # vLLM's own sampling extensions, accepted by its OpenAI server too
        "top_k",
        "min_p",
        "repetition_penalty",
        "min_tokens",
    }
)

TRANSFORMERS_OPTIONS = _COMMON

TOOL_OPTIONS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
TOOL_HISTORY = "tool_calls"  # the name a history with tool calls is refused under
VLLM_TOOLS = "vllm with a tool_call_parser"

# None: the engine forwards every option to its server, which honours or refuses it.
ENGINE_OPTIONS: Mapping[str, frozenset[str] | None] = {
    "vllm": VLLM_OPTIONS,
    VLLM_TOOLS: VLLM_OPTIONS | TOOL_OPTIONS,
    "transformers": TRANSFORMERS_OPTIONS,
    "openai": None,
}

# Values that mean "the option is off": a request that sets them asks for nothing.
_NEUTRAL: Mapping[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none",),
    "parallel_tool_calls": (True, False),
    "stream_options": (None,),
}


def _neutral(key: str, value: Any) -> bool:
    if value is None:
        return True
    return any(value == v and type(value) is type(v) for v in _NEUTRAL.get(key, ()))


def tool_history(messages: Any) -> bool:
    """Whether chat ``messages`` hold tool calls (an assistant's ``tool_calls`` or a ``tool``
    or ``function`` message), which only an engine that serves tools can render."""
    if type(messages) is not list:
        return False
    for m in messages:
        if type(m) is dict and (m.get("tool_calls") or m.get("role") in ("tool", "function")):
            return True
    return False


def refused_options(body: Mapping[str, Any], kind: str) -> list[str]:
    """The options in ``body`` that an engine of ``kind`` cannot honour, in body order.

    An option set to its neutral value (``logprobs: false``, ``presence_penalty: 0``,
    ``response_format: {"type": "text"}``, ``tools: []``) asks for nothing and is accepted. A
    history with tool calls is refused as ``TOOL_HISTORY`` by an engine without tools.
    """
    supported = ENGINE_OPTIONS.get(kind)
    if supported is None:
        return []
    refused = [
        key
        for key, value in body.items()
        if key not in PASSIVE_KEYS and key not in supported and not _neutral(key, value)
    ]
    if "tools" not in supported and tool_history(body.get("messages")):
        refused.append(TOOL_HISTORY)
    return refused


def _label(name: str) -> str:
    return "tool calls in 'messages'" if name == TOOL_HISTORY else repr(name)


def refusal_message(refused: Iterable[str], kind: str, body: Mapping[str, Any]) -> str:
    """The error text for options ``kind`` does not honour, saying what to change."""
    names = ", ".join(_label(k) for k in refused)
    where = [k for k in honouring_kinds(body, ENGINE_OPTIONS) if k != kind]
    if "vllm" in where and VLLM_TOOLS in where:  # any vllm pool will do: no parser needed
        where.remove(VLLM_TOOLS)
    hint = f", or run it on a pool whose engine is {' or '.join(where)}" if where else ""
    return (
        f"option(s) {names} not supported by the {kind} engine; remove them{hint} "
        "(docs/workers.md lists the options of each engine)"
    )


def honouring_kinds(body: Mapping[str, Any], kinds: Iterable[str]) -> list[str]:
    """The engine kinds among ``kinds`` that honour every option of ``body``."""
    return [k for k in kinds if not refused_options(body, k)]


def engine_kinds_by_model(fleet: Fleet) -> dict[str, frozenset[str]]:
    """The engine kinds of the pools that could serve each model (a pool whose GPU type has a
    profile of the model; a vLLM pool counts as ``VLLM_TOOLS`` for a model with a
    ``tool_call_parser``); ``auto`` gets every kind of the fleet's generation models."""
    pools = [pool for site in fleet.sites for pool in site.pools]
    out = {
        m.name: frozenset(
            VLLM_TOOLS if p.engine.kind == "vllm" and m.extra.get("tool_call_parser") else kind
            for p in pools
            if p.gpu in m.profiles
            for kind in (p.engine.kind,)
        )
        for m in fleet.models
    }
    out["auto"] = frozenset().union(*(out[m.name] for m in fleet.models if not m.embeds))
    for alias in fleet.model_aliases.values():  # a hosted name standing for a fleet model
        if alias.model in out:
            out[alias.name] = out[alias.model]
    return out


class OptionCheck:
    """Intake's per-line check: options some engine that may serve the line's model refuses.

    Every pool that may serve a line must honour its options (the plan is free to place the
    line on any of them), so a line is refused at intake unless every engine kind serving its
    model honours it; a forwarding engine (``openai``) leaves the decision to its server. Built
    once per batch; the common line costs one set comparison.
    """

    def __init__(self, kinds_by_model: Mapping[str, Iterable[str]]) -> None:
        """Precompute, per model, its checked kinds and the options all of them honour."""
        self._kinds: dict[str, tuple[str, ...]] = {}
        self._allowed: dict[str, frozenset[str] | None] = {}
        for model, kinds in kinds_by_model.items():
            checked = tuple(sorted(k for k in kinds if ENGINE_OPTIONS.get(k) is not None))
            self._kinds[model] = checked
            sets = [ENGINE_OPTIONS[k] or frozenset() for k in checked]
            # None: unknown model, or only forwarding engines: nothing to refuse here
            self._allowed[model] = (
                PASSIVE_KEYS.union(frozenset.intersection(*sets)) if sets else None
            )

    def allowed(self, model: str) -> frozenset[str] | None:
        """The keys every checked engine serving ``model`` honours (None: nothing to check); a
        body within them needs no ``problem`` call."""
        return self._allowed.get(model)

    def problem(self, model: str, body: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(message, first refused option)`` when an engine that may serve ``model`` refuses."""
        allowed = self._allowed.get(model)
        if allowed is None:
            return None
        if allowed.issuperset(body) and (
            "tools" in allowed or not tool_history(body.get("messages"))
        ):
            return None
        lacking = {k: refused_options(body, k) for k in self._kinds[model]}
        lacking = {k: v for k, v in lacking.items() if v}
        if not lacking:
            return None  # only neutral values
        names = list(dict.fromkeys(n for v in lacking.values() for n in v))
        return (
            f"option(s) {', '.join(_label(n) for n in names)} not supported by an engine that may "
            f"serve model {model!r} ({' or '.join(lacking)}); remove them or send the line to a "
            "model whose pools all honour them (docs/workers.md lists the options of each "
            "engine; tools need a vllm pool whose model has a tool_call_parser in fleet.yaml, "
            "or the openai engine)",
            "messages" if names[0] == TOOL_HISTORY else names[0],
        )
