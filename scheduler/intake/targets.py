"""What each model name of a batch's lines resolves to, and the per-model rules a line meets.

A file names few models in many lines, so a name is resolved once (alias, ``auto`` floor) into
a ``Target`` that carries everything a line's body is held against: which engines' options it
may use, the most tokens it may ask for, and the context it must fit. ``LineRules`` also holds
the batch endpoint's one body checker, so validating a line is one pass over its body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler.engine_options import OptionCheck
from scheduler.intake.bodies import embedding_chars, longest_input_chars, response_chars
from scheduler.intake.bounds import MAX_OUTPUT_TOKENS, min_prompt_tokens
from scheduler.intake.catalog import AUTO_MODEL, EMBEDDINGS, ModelCatalog, Resolved
from scheduler.intake.generate import check_chat, check_completion, max_tokens_key

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"

INVALID_VALUE = "invalid_value"
UNSUPPORTED_OPTION = "unsupported_option"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
UNBOUNDED = 1 << 62  # a context no request reaches: the model states none

Err = tuple[str, str, str | None]
Checked = Err | tuple[int, int]

# The parameter that holds each endpoint's prompt, and the key of its output limit.
_PROMPT_PARAM = {
    CHAT: "body.messages",
    COMPLETIONS: "body.prompt",
    EMBEDDINGS: "body.input",
    RESPONSES: "body.input",
}
_MAX_KEY = {
    CHAT: "max_completion_tokens",
    COMPLETIONS: "max_tokens",
    RESPONSES: "max_output_tokens",
}


@dataclass(slots=True)
class Target:
    """A model name of the file, resolved: its part and the limits its lines must meet.

    ``context`` is the largest context among the models that may serve the name (``UNBOUNDED``
    when one states none) and ``context_model`` the model that has it; ``max_output`` the fleet's
    ``max_output_tokens`` of a named model (else the global bound); ``index`` the part's
    position in ``ScanResult.models`` once a line of it is accepted (-1 before).
    """

    resolved: Resolved
    option_key: str
    max_output: int
    context: int
    context_model: str
    dimensions_ok: bool
    allowed: frozenset[str] | None = None  # body keys every engine of the model honours
    index: int = -1


class LineRules:
    """The rules a batch's lines meet: its endpoint's body checker and a ``Target`` per name."""

    def __init__(
        self,
        endpoint: str,
        catalog: ModelCatalog,
        min_quality: float | None,
        options: OptionCheck | None,
    ) -> None:
        """Pick the endpoint's checker; targets are resolved lazily, once per model name."""
        self.endpoint = endpoint
        self.catalog = catalog
        self.min_quality = min_quality
        self.options = options
        self.targets: dict[str, Target | Err] = {}
        checkers: dict[str, Callable[[dict[str, Any], Target], Checked]] = {
            CHAT: self._generate,
            COMPLETIONS: self._generate,
            EMBEDDINGS: self._embedding,
            RESPONSES: self._response,
        }
        self.check_body = checkers[endpoint]
        self._body = check_chat if endpoint == CHAT else check_completion

    def target(self, model: str) -> Target | Err:
        """Resolve ``model`` (alias, ``auto`` floor) into its target, or the error; cached."""
        resolved = self.catalog.resolve(model, self.endpoint, self.min_quality)
        if not isinstance(resolved, Resolved):
            self.targets[model] = resolved
            return resolved
        context = self.catalog.context_of(resolved)
        widest = ""
        if context is not None:
            widest = max(context[1], key=lambda m: self.catalog.contexts[m])
        key = resolved.part_key
        target = Target(
            resolved=resolved,
            option_key=AUTO_MODEL if resolved.floor is not None else key,
            max_output=self.catalog.output_limits.get(key, MAX_OUTPUT_TOKENS),
            context=context[0] if context is not None else UNBOUNDED,
            context_model=widest,
            dimensions_ok=key in self.catalog.dimensions_ok,
        )
        if self.options is not None:
            target.allowed = self.options.allowed(target.option_key)
        self.targets[model] = target
        return target

    def _generate(self, body: dict[str, Any], target: Target) -> Checked:
        checked = self._body(body)
        allowed = target.allowed
        if len(checked) == 3 or self.options is None or allowed is None:
            return checked
        if allowed.issuperset(body):  # the common line: one set comparison
            return checked
        problem = self.options.problem(target.option_key, body)
        if problem is not None:
            return UNSUPPORTED_OPTION, problem[0], f"body.{problem[1]}"
        return checked

    def _embedding(self, body: dict[str, Any], target: Target) -> Checked:
        return embedding_chars(body, dimensions_ok=target.dimensions_ok)

    def _response(self, body: dict[str, Any], target: Target) -> Checked:
        checked = response_chars(body)
        if len(checked) == 3 or self.options is None:
            return checked
        fmt = (body.get("text") or {}).get("format") or {}
        if fmt.get("type") in ("json_object", "json_schema"):
            # runs on the chat path as response_format: refused where no engine constrains JSON
            problem = self.options.problem(target.option_key, {"response_format": fmt})
            if problem is not None:
                message = problem[0].replace("'response_format'", "'text.format' (JSON output)")
                return UNSUPPORTED_OPTION, message, "body.text.format"
        return checked

    def too_long(self, body: dict[str, Any], target: Target, chars: int, mt: int) -> Err | None:
        """Why a line asks for more than its model allows, or None when it fits after all.

        Called only for lines over a bound: ``max_tokens`` above the model's own limit, or the
        prompt's lower bound plus ``max_tokens`` beyond every eligible model's context.
        """
        name = target.resolved.part_key
        key = max_tokens_key(body, _MAX_KEY.get(self.endpoint, "max_tokens"))
        if mt > target.max_output:
            return (
                INVALID_VALUE,
                f"{key} of {mt} exceeds what model {name!r} can generate "
                f"({target.max_output} tokens, its max_output_tokens in the fleet); ask for at "
                f"most {target.max_output}",
                f"body.{key}",
            )
        if self.endpoint == EMBEDDINGS:  # each input is embedded alone: the longest must fit
            chars = longest_input_chars(body.get("input"))
            if min_prompt_tokens(chars) <= target.context:
                return None
        prompt = min_prompt_tokens(chars)
        served = "any model that may serve 'auto'" if target.resolved.floor is not None else ""
        served = served or f"model {name!r}"
        limit = f"{target.context} tokens, the context of {target.context_model!r}"
        if self.endpoint == EMBEDDINGS or prompt + 1 > target.context:
            return (
                CONTEXT_LENGTH_EXCEEDED,
                f"the input ({chars} characters, at least {prompt} tokens whatever the "
                f"tokenizer) does not fit {served} ({limit}, the largest); shorten it or split it "
                "over several lines",
                _PROMPT_PARAM[self.endpoint],
            )
        return (
            CONTEXT_LENGTH_EXCEEDED,
            f"{key} ({mt}) plus the prompt (at least {prompt} tokens) does not fit {served} "
            f"({limit}, the largest); ask for at most {target.context - prompt} tokens or use "
            "a model with a larger context (fleet.yaml context_tokens)",
            f"body.{key}",
        )
