"""Output JSONL: a line stays one line for every reader, Unicode line separators included."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.dispatch.outputs import read_jsonl, write_jsonl_atomic


def test_unicode_line_breaks_in_outputs_are_escaped(tmp_path: Path) -> None:
    # Given model outputs holding NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR (and plain UTF-8)
    lines = [
        {"custom_id": "a", "response": {"body": {"text": "one\u2028two\x85three\u2029four"}}},
        {"custom_id": "b", "response": {"body": {"text": "naïve café"}}},
    ]
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, lines)
    text = path.read_text(encoding="utf-8")
    # Then str.splitlines() (what many clients use) sees exactly one line per object
    assert len(text.splitlines()) == 2
    assert [json.loads(x) for x in text.splitlines()] == lines
    # and the file stays readable UTF-8 (only the separators are escaped)
    assert "naïve café" in text and "\\u2028" in text and "\\u0085" in text
    assert read_jsonl(path) == lines
