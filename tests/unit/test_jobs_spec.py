"""The job spec loader refuses bad specs clearly and merges inputs without rewriting them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.errors import InvalidInput
from scheduler.jobs import (
    build_batch_file,
    check_request_line,
    create_options,
    load_job,
    resolve_deadline,
)


def _line(custom_id: str, model: str = "auto", url: str = "/v1/chat/completions") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_two_input_files_are_concatenated_byte_for_byte(tmp_path: Path) -> None:
    # Given two input files matched by one glob, with a blank line in the first
    (tmp_path / "in-a.jsonl").write_text(_line("a1") + "\n\n" + _line("a2") + "\n")
    (tmp_path / "in-b.jsonl").write_text(_line("b1"))  # no trailing newline
    spec = load_job(_write_spec(tmp_path, "name: n\ninput: in-*.jsonl\nmin_quality: 0.5\n"))

    # When the batch file is built
    built = build_batch_file(spec, tmp_path)

    # Then the lines are the originals in file order, blank lines dropped, newline-terminated
    assert built.content.decode() == "\n".join([_line("a1"), _line("a2"), _line("b1")]) + "\n"
    assert built.requests == 3
    assert [p.name for p in built.paths] == ["in-a.jsonl", "in-b.jsonl"]
    assert built.max_tokens_total == 48


def test_duplicate_custom_id_across_files_is_reported_with_both_places(tmp_path: Path) -> None:
    # Given the same custom_id in two files
    (tmp_path / "a.jsonl").write_text(_line("same") + "\n")
    (tmp_path / "b.jsonl").write_text(_line("other") + "\n" + _line("same") + "\n")
    spec = load_job(_write_spec(tmp_path, "name: n\ninput: [a.jsonl, b.jsonl]\nmin_quality: 0.5\n"))

    # When the batch file is built / Then the error names the second line and the first use
    with pytest.raises(
        InvalidInput, match=r"b.jsonl:2: custom_id 'same' already used at a.jsonl:1"
    ) as e:
        build_batch_file(spec, tmp_path)
    assert [(err.line, err.code) for err in e.value.errors] == [(2, "duplicate_custom_id")]


def test_line_with_a_model_other_than_the_jobs_is_refused(tmp_path: Path) -> None:
    # Given a job for one named model and a line naming another
    lines = [_line("x", model="llama-3.1-8b-instruct"), _line("y", model="tiny-chat")]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    spec = load_job(
        _write_spec(tmp_path, "name: n\ninput: a.jsonl\nmodel: llama-3.1-8b-instruct\n")
    )

    # When / Then: the bad line is named with its number
    with pytest.raises(
        InvalidInput, match=r"a.jsonl:2: body.model must be 'llama-3.1-8b-instruct'"
    ):
        build_batch_file(spec, tmp_path)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: n\ninput: a.jsonl\n", "exactly one of 'model' or 'min_quality'"),
        ("name: n\ninput: a.jsonl\nmodel: m\nmin_quality: 0.5\n", "exactly one of"),
        ("name: n\ninput: a.jsonl\nmodel: m\nwindow: 8h\ndeadline: '06:00'\n", "at most one"),
        ("name: n\ninput: a.jsonl\nmodel: m\nwindow: 90m\n", "whole hours"),
        ("name: n\ninput: a.jsonl\nmodel: m\ndeadline: '25:00'\n", "time of day"),
        ("name: n\ninput: a.jsonl\nmodel: m\nschedule: nightly\n", "5-field cron"),
        ("name: Bad Name\ninput: a.jsonl\nmodel: m\n", "name must match"),
        ("name: n\ninput: a.jsonl\nmodel: m\ncolour: red\n", "colour"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_invalid_spec_is_refused_with_a_message_naming_the_problem(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    # Given a spec that breaks one rule / When it is loaded / Then the message says which
    with pytest.raises(InvalidInput, match=message):
        load_job(_write_spec(tmp_path, yaml_text))


def test_input_pattern_matching_nothing_is_refused(tmp_path: Path) -> None:
    # Given a spec whose glob matches no file
    spec = load_job(_write_spec(tmp_path, "name: n\ninput: missing-*.jsonl\nmodel: m\n"))

    # When / Then
    with pytest.raises(InvalidInput, match="matches no file"):
        build_batch_file(spec, tmp_path)


def test_time_of_day_deadline_is_the_next_occurrence_in_utc(tmp_path: Path) -> None:
    # Given a job due at 06:00
    spec = load_job(_write_spec(tmp_path, "name: n\ninput: a.jsonl\nmodel: m\ndeadline: '06:00'\n"))

    # When it is submitted before and after 06:00 UTC
    before = resolve_deadline(spec, datetime(2026, 11, 22, 5, 59, tzinfo=UTC))
    after = resolve_deadline(spec, datetime(2026, 11, 22, 6, 0, tzinfo=UTC))

    # Then the deadline is the same day, then the next day
    assert before == datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
    assert after == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def test_create_options_carry_gridshift_extras(tmp_path: Path) -> None:
    # Given a job with every planning option
    spec = load_job(
        _write_spec(
            tmp_path,
            "name: n\ninput: a.jsonl\nmin_quality: 0.7\nwindow: 8h\n"
            "sites: [de-frankfurt]\npriority: 2\nmetadata: {team: x}\n",
        )
    )

    # When the create body is built
    options = create_options(spec, datetime(2026, 11, 22, tzinfo=UTC))

    # Then the extras travel beside the OpenAI fields
    assert options == {
        "completion_window": "8h",
        "metadata": {"team": "x", "gridshift_job": "n"},
        "priority": 2.0,
        "min_quality": 0.7,
        "sites": ["de-frankfurt"],
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"custom_id": "", "method": "POST"}', "custom_id"),
        ('{"custom_id": "a", "method": "GET"}', "method must be 'POST'"),
        (_line("a", url="/v1/embeddings"), "url must be"),
    ],
)
def test_malformed_request_line_is_refused(line: str, message: str) -> None:
    # Given a malformed line / When it is checked / Then the message names the field
    with pytest.raises(ValueError, match=message):
        check_request_line(line, endpoint="/v1/chat/completions", model="auto")
