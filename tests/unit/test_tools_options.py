"""Chat tools at intake: refused per line only where no engine of the model's pools serves them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.engine_options import (
    VLLM_TOOLS,
    OptionCheck,
    engine_kinds_by_model,
    refused_options,
    tool_history,
)
from scheduler.errors import ConfigError
from scheduler.fleet import parse_fleet
from scheduler.intake.validate import UNSUPPORTED_OPTION, scan_lines

CHAT = "/v1/chat/completions"
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
HISTORY = [
    {"role": "user", "content": "What is the grid's carbon now?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "212 g/kWh"},
]


def _fleet(**tools: Any) -> Any:
    profile = {"gpus": 1, "prefill_tok_s": 1000, "decode_tok_s": 100, "power_w": 300}
    pools = [
        {"name": "gpu", "gpu": "H100", "count": 1, "engine": {"kind": "vllm"}},
        {"name": "cpu", "gpu": "CPU", "count": 1, "engine": {"kind": "transformers"}},
        {"name": "api", "gpu": "API", "count": 1, "engine": {"kind": "openai", "base_url": "x"}},
    ]
    return parse_fleet(
        {
            "sites": [{"name": "s", "pools": pools}],
            "models": [
                {"name": "parsed", "quality": 0.9, "profiles": {"H100": profile}, **tools},
                {"name": "plain", "quality": 0.8, "profiles": {"H100": profile}},
                {"name": "small", "quality": 0.5, "profiles": {"CPU": profile}},
                {"name": "hosted", "quality": 0.7, "profiles": {"API": profile}},
            ],
        }
    )


def _line(cid: str, model: str, **body: Any) -> bytes:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    line = {"custom_id": cid, "method": "POST", "url": CHAT, "body": {"model": model, **body}}
    return (json.dumps(line) + "\n").encode()


def test_a_vllm_pool_serves_tools_only_for_a_model_with_a_tool_parser() -> None:
    kinds = engine_kinds_by_model(_fleet(tool_call_parser="hermes", enable_auto_tool_choice=True))
    assert kinds["parsed"] == {VLLM_TOOLS} and kinds["plain"] == {"vllm"}
    assert kinds["auto"] == {VLLM_TOOLS, "vllm", "transformers", "openai"}


def test_intake_refuses_tools_only_where_no_engine_serves_them() -> None:
    fleet = _fleet(tool_call_parser="hermes", enable_auto_tool_choice=True)
    lines = [
        _line("a", "parsed", tools=TOOLS, tool_choice="auto"),
        _line("b", "parsed", messages=HISTORY),
        _line("c", "hosted", tools=TOOLS, messages=HISTORY),
        _line("d", "plain", tools=TOOLS),
        _line("e", "small", tools=TOOLS, tool_choice="required", messages=HISTORY),
        _line("f", "plain", tools=[], tool_choice="none"),  # neutral values ask for nothing
    ]
    scan = scan_lines(
        lines,
        endpoint=CHAT,
        models=["parsed", "plain", "small", "hosted"],
        min_quality=None,
        max_requests=100,
        options=OptionCheck(engine_kinds_by_model(fleet)),
    )
    # the model with a parser and the forwarding engine take them; the others refuse per line
    assert scan.custom_ids == ["a", "b", "c", "f"]
    by_line = {e.line: e for e in scan.errors}
    assert sorted(by_line) == [4, 5]
    assert by_line[4].code == UNSUPPORTED_OPTION and by_line[4].param == "body.tools"
    assert "tool_call_parser" in by_line[4].message and "'plain'" in by_line[4].message
    # a refused line names its tool history too
    assert "'tools', 'tool_choice', tool calls in 'messages'" in by_line[5].message


def test_the_option_check_names_a_tool_history_where_it_is_asked() -> None:
    check = OptionCheck(engine_kinds_by_model(_fleet(tool_call_parser="hermes")))
    problem = check.problem("small", {"model": "small", "messages": HISTORY})
    assert problem is not None and problem[1] == "messages"
    assert "tool calls in 'messages'" in problem[0]
    assert check.problem("parsed", {"model": "parsed", "messages": HISTORY}) is None
    assert check.problem("hosted", {"model": "hosted", "messages": HISTORY}) is None


def test_engines_without_tools_refuse_a_tool_history_instead_of_dropping_it() -> None:
    assert tool_history(HISTORY) and not tool_history([{"role": "user", "content": "x"}])
    body = {"messages": HISTORY}
    assert refused_options(body, "vllm") == ["tool_calls"]
    assert refused_options(body, "transformers") == ["tool_calls"]
    assert refused_options(body, VLLM_TOOLS) == [] and refused_options(body, "openai") == []
    assert refused_options({"messages": HISTORY, "tools": TOOLS}, VLLM_TOOLS) == []


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"tool_call_parser": 3}, "must name a vLLM tool parser"),
        ({"enable_auto_tool_choice": "yes"}, "must be true or false"),
        ({"enable_auto_tool_choice": True}, "needs a tool_call_parser"),
    ],
)
def test_fleet_tool_keys_are_checked(tools: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _fleet(**tools)
