"""Options honoured or refused: intake refuses, per line, what no engine of the model honours."""

from __future__ import annotations

import json

from scheduler.engine_options import OptionCheck, engine_kinds_by_model
from scheduler.fleet import parse_fleet
from scheduler.intake.submit import part_rows
from scheduler.intake.validate import UNSUPPORTED_OPTION, scan_lines
from scheduler.store.tables import Batch

CHAT = "/v1/chat/completions"


def _fleet():  # type: ignore[no-untyped-def]
    profile = {"gpus": 1, "prefill_tok_s": 1000, "decode_tok_s": 100, "power_w": 300}
    return parse_fleet(
        {
            "sites": [
                {
                    "name": "s",
                    "pools": [
                        {
                            "name": "cpu",
                            "gpu": "CPU",
                            "count": 1,
                            "engine": {"kind": "transformers"},
                        },
                        {"name": "gpu", "gpu": "H100", "count": 1, "engine": {"kind": "vllm"}},
                    ],
                }
            ],
            "models": [
                {"name": "small", "quality": 0.5, "profiles": {"CPU": profile}},
                {"name": "big", "quality": 0.9, "profiles": {"H100": profile}},
            ],
        }
    )


def _line(cid: str, model: str, **body: object) -> bytes:
    messages = [{"role": "user", "content": "hi"}]
    line = {"custom_id": cid, "method": "POST", "url": CHAT}
    return (
        json.dumps({**line, "body": {"model": model, "messages": messages, **body}}) + "\n"
    ).encode()


def test_kinds_per_model_follow_the_pools_that_have_its_profile() -> None:
    kinds = engine_kinds_by_model(_fleet())
    assert kinds == {
        "small": frozenset({"transformers"}),
        "big": frozenset({"vllm"}),
        "auto": frozenset({"transformers", "vllm"}),
    }


def test_intake_refuses_per_line_what_no_engine_of_the_model_honours() -> None:
    # Given lines asking for logprobs and a JSON schema of a model served only by transformers,
    # the same of a model served by vLLM, tools on vLLM, and neutral values anywhere
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string"}}}
    lines = [
        _line("a", "small", logprobs=True),
        _line("b", "big", logprobs=True, top_logprobs=2, response_format=fmt),
        _line("c", "big", tools=[{"type": "function", "function": {"name": "f"}}]),
        _line("d", "small", logprobs=False, presence_penalty=0, response_format={"type": "text"}),
        _line("e", "auto", logprobs=True),
    ]
    scan = scan_lines(
        lines,
        endpoint=CHAT,
        models={"small", "big"},
        min_quality=0.5,
        max_requests=100,
        options=OptionCheck(engine_kinds_by_model(_fleet())),
    )
    # Then lines 1, 3 and 5 are refused with their line numbers, the option and what to change
    # (`auto` may be placed on the transformers pool, which cannot give logprobs)
    errors = {e.line: e for e in scan.errors}
    assert sorted(errors) == [1, 3, 5]
    assert errors[1].code == UNSUPPORTED_OPTION and errors[1].param == "body.logprobs"
    assert "may serve model 'small' (transformers)" in errors[1].message
    assert "remove them" in errors[1].message
    assert errors[3].param == "body.tools"
    assert "may serve model 'auto' (transformers)" in errors[5].message
    # and the others are accepted (vLLM honours them; neutral values ask for nothing)
    assert scan.custom_ids == ["b", "d"]


def test_a_forwarding_engine_leaves_options_to_its_server() -> None:
    only_forwarding = OptionCheck({"m": ["openai"]})
    assert only_forwarding.problem("m", {"logprobs": True, "tools": [{"x": 1}]}) is None
    assert OptionCheck({"m": []}).problem("m", {"anything": 1}) is None
    # beside a transformers pool, the transformers pool still decides what is refused
    mixed = OptionCheck({"m": ["openai", "vllm"]})
    assert mixed.problem("m", {"logprobs": True}) is None
    problem = mixed.problem("m", {"tools": [{"x": 1}]})
    assert problem is not None and problem[1] == "tools"


def test_n_is_honoured_by_every_engine_and_counted_in_the_output_estimate() -> None:
    # Given lines asking for several completions of models served by transformers, vLLM and
    # `auto`, and one asking for more than an engine returns
    fleet = _fleet()
    lines = [
        _line("a", "small", n=3, max_tokens=10),
        _line("b", "big", n=2, max_tokens=10),
        _line("c", "auto", n=4, max_tokens=10),
        _line("d", "small", max_tokens=10),
        _line("e", "big", n=17, max_tokens=10),
    ]
    scan = scan_lines(
        lines,
        endpoint=CHAT,
        models={"small", "big"},
        min_quality=0.5,
        max_requests=100,
        options=OptionCheck(engine_kinds_by_model(fleet)),
    )
    # Then n is no refused option on any engine; only the out-of-range n is a line error
    assert scan.custom_ids == ["a", "b", "c", "d"]
    [error] = scan.errors
    assert (error.line, error.param) == (5, "body.n") and "1 to 16" in error.message
    assert scan.choices.tolist() == [3, 2, 4, 1]
    # and the planner's output estimate counts every completion: max_tokens x n x fraction
    batch = Batch(id="batch_n", endpoint=CHAT)
    rows = {r["model"] or "auto": r for r in part_rows(batch, scan, fleet, 256)}
    fraction = {m.name: m.expected_output_fraction for m in fleet.models}
    assert rows["small"]["output_tokens"] == (30 + 10) * fraction["small"]
    assert rows["big"]["output_tokens"] == 20 * fraction["big"]
    assert rows["auto"]["output_tokens"] == 40 * max(fraction.values())
    assert all(r["tokens_estimated"] for r in rows.values())
