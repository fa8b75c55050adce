"""Chat tools on the vLLM engine, served as vLLM's OpenAI server serves them.

A model whose fleet entry names a ``tool_call_parser`` (one of vLLM's, e.g. ``hermes``) gets
its requests' ``tools`` rendered by its chat template and its tool calls parsed:

* ``tool_choice: "none"``: the tools are in the prompt, the text comes back as content;
* ``"auto"`` (the default with tools): needs ``enable_auto_tool_choice: true`` too (else vLLM's
  own 400); the parser turns the text into ``tool_calls`` (finish reason ``tool_calls``);
* ``"required"`` or a named function: the output is constrained to the tools' JSON schema
  (vLLM's ``get_json_schema_from_tools``) and read back as ``tool_calls``.

Histories with assistant ``tool_calls`` and ``role: tool`` messages go to the chat template
as they are. The request is checked with vLLM's own ``ChatCompletionRequest`` (its messages).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.errors import EngineError, InvalidInput

# vLLM's message, verbatim (its OpenAI server and run_batch answer 400 with it)
AUTO_NEEDS_PARSER = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one request uses tools: the template's tool dicts, the choice mode, the JSON schema
    constraining the output (named or required), and vLLM's request object for the parser."""

    tools: list[dict[str, Any]] | None
    mode: str  # "none", "auto", "named" or "required"
    schema: Mapping[str, Any] | None
    named: str | None
    request: Any
    skip_special_tokens: bool = True


def _call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


class VLLMTools:
    """The tool support of one model on the vLLM engine (its parser and auto choice)."""

    def __init__(self, parser: str, *, auto: bool, tokenizer: Any) -> None:
        """Look up vLLM's tool parser ``parser`` for ``tokenizer``.

        Raises:
            EngineError: vLLM has no tool parser of that name.
        """
        from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

        try:
            self._parser_cls = ToolParserManager.get_tool_parser(parser)
        except KeyError:
            known = sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers})
            raise EngineError(
                f"tool_call_parser {parser!r} is not one of vLLM's tool parsers; use one of "
                f"{known} in the model's fleet.yaml entry"
            ) from None
        self.parser = parser
        self.auto = auto
        self._tokenizer = tokenizer

    def plan(self, body: Mapping[str, Any]) -> ToolPlan:
        """Check the request's tools and choice as vLLM does and say how to run it.

        Raises:
            InvalidInput: vLLM would refuse the request (its message).
        """
        from pydantic import ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers.utils import get_json_schema_from_tools

        try:
            request: Any = ChatCompletionRequest.model_validate(dict(body))
        except (ValidationError, ValueError) as e:
            raise InvalidInput(f"invalid tools request: {e}") from None
        choice = request.tool_choice
        tools = [t.model_dump() for t in request.tools] if request.tools else None
        if not tools or choice in (None, "none"):
            return ToolPlan(tools, "none", None, None, request)
        if choice == "auto":
            if not self.auto:
                raise InvalidInput(AUTO_NEEDS_PARSER)
            # the parser may need the special tokens that mark a call (hermes: <tool_call>)
            request = self._parser_cls(self._tokenizer, request.tools).adjust_request(request)
            skip = bool(getattr(request, "skip_special_tokens", True))
            return ToolPlan(tools, "auto", None, None, request, skip)
        try:
            schema = get_json_schema_from_tools(choice, request.tools, request.parallel_tool_calls)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        schema = json.loads(schema) if isinstance(schema, str) else schema
        named = None if choice == "required" else request.tool_choice.function.name
        return ToolPlan(tools, "required" if named is None else "named", schema, named, request)

    def finish(self, plan: ToolPlan, message: dict[str, Any], finish_reason: str) -> str:
        """Turn a generated chat ``message`` into tool calls as the plan says; the finish
        reason OpenAI gives it (``tool_calls`` for auto calls and required)."""
        text = str(message.get("content") or "")
        calls: list[dict[str, Any]] = []
        if plan.mode == "auto":
            parser = self._parser_cls(self._tokenizer, plan.request.tools)
            info = parser.extract_tool_calls(text, plan.request)
            if info.tools_called and info.tool_calls:
                calls = [c.model_dump(exclude_none=True) for c in info.tool_calls]
                message["content"] = info.content or None
        elif plan.mode == "named":
            calls = [self._call(plan.named or "", text)]
            message["content"] = ""
        elif plan.mode == "required":
            calls = [self._call(c.get("name", ""), c.get("parameters")) for c in _json_list(text)]
            if calls:
                message["content"] = ""
        if not calls:
            return finish_reason
        for call in calls:
            call.setdefault("id", _call_id())
            call.setdefault("type", "function")
        message["tool_calls"] = calls
        called = plan.mode == "auto" or (plan.mode == "required" and finish_reason == "stop")
        return "tool_calls" if called else finish_reason

    @staticmethod
    def _call(name: str, arguments: Any) -> dict[str, Any]:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return {"id": _call_id(), "type": "function", "function": {"name": name, "arguments": args}}


def _json_list(text: str) -> list[dict[str, Any]]:
    """The ``[{name, parameters}]`` a ``required`` choice generates ([] if cut short)."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The messages as the chat template takes them: tool calls, tool results and names kept."""
    out = []
    for m in body.get("messages") or ():
        message = {k: v for k, v in dict(m).items() if v is not None}
        message.setdefault("content", "")
        out.append(message)
    return out
