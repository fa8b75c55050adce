"""The transformers engine generates for real on the tiny local model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import EngineError
from workers.engines import EngineConfig, EngineRequest, build_engine
from workers.engines.transformers import TransformersEngine

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    eng = build_engine(EngineConfig(kind="transformers", options={"device": "cpu"}))
    assert isinstance(eng, TransformersEngine)
    eng.load("tiny", str(tiny_model_dir))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def chat(custom_id: str, content: str, **options: Any) -> EngineRequest:
    return EngineRequest(
        custom_id,
        CHAT,
        {"model": "tiny", "messages": [{"role": "user", "content": content}], **options},
    )


def completion(custom_id: str, prompt: str, **options: Any) -> EngineRequest:
    return EngineRequest(custom_id, COMPLETIONS, {"model": "tiny", "prompt": prompt, **options})


def test_chat_request_returns_a_chat_completion_with_real_token_counts(
    engine: TransformersEngine, tokenizer: Any
) -> None:
    # Given a chat request
    messages = [{"role": "user", "content": "Summarise the grid forecast"}]
    # When it runs
    [result] = engine.run([EngineRequest("c1", CHAT, {"messages": messages, "max_tokens": 6})])
    # Then the body is a chat.completion whose prompt count is the chat template's token count
    assert result.status_code == 200 and result.body is not None
    body = result.body
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    templated = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected_prompt = len(tokenizer(templated, add_special_tokens=False)["input_ids"])
    assert body["usage"]["prompt_tokens"] == expected_prompt == result.input_tokens
    assert 0 < result.output_tokens <= 6
    assert body["usage"]["total_tokens"] == result.input_tokens + result.output_tokens


def test_completion_request_returns_a_text_completion_counting_the_prompt_tokens(
    engine: TransformersEngine, tokenizer: Any
) -> None:
    # Given a completions request
    prompt = "The grid is cleaner at night"
    # When it runs
    [result] = engine.run([completion("p1", prompt, max_tokens=5, temperature=0)])
    # Then it is a text_completion with the tokenizer's own prompt count
    assert result.status_code == 200 and result.body is not None
    assert result.body["object"] == "text_completion"
    assert isinstance(result.body["choices"][0]["text"], str)
    assert result.input_tokens == len(tokenizer(prompt)["input_ids"]) > 0
    assert result.body["choices"][0]["finish_reason"] in ("stop", "length")


def test_max_tokens_caps_every_request_in_a_mixed_batch(engine: TransformersEngine) -> None:
    # Given requests with different limits batched together (both spellings of the limit)
    requests = [
        completion("a", "Energy is measured", max_tokens=1, temperature=0),
        completion("b", "Energy is measured in kilowatt hours", max_tokens=9, temperature=0),
        chat("c", "hello", max_completion_tokens=3, max_tokens=50, temperature=0),
    ]
    # When they run
    results = engine.run(requests)
    # Then each stays within its own limit, and a "length" finish means it hit it exactly
    limits = {"a": 1, "b": 9, "c": 3}
    for r in results:
        assert r.body is not None
        assert 0 < r.output_tokens <= limits[r.custom_id]
        if r.body["choices"][0]["finish_reason"] == "length":
            assert r.output_tokens == limits[r.custom_id]


def test_a_prompt_longer_than_the_context_fails_alone_with_400(engine: TransformersEngine) -> None:
    # Given a batch where one prompt exceeds the 256-token context
    requests = [
        completion("ok-1", "A scheduler places shards", max_tokens=4),
        completion("too-long", "carbon " * 400, max_tokens=4),
        chat("ok-2", "Translate the sentence", max_tokens=4),
    ]
    # When it runs
    results = engine.run(requests)
    # Then only that request fails, with a 400 saying why, and the others succeed in order
    assert [r.custom_id for r in results] == ["ok-1", "too-long", "ok-2"]
    assert [r.status_code for r in results] == [200, 400, 200]
    bad = results[1]
    assert bad.error is not None and "context" in bad.error["message"]
    assert bad.body is not None and bad.body["error"]["type"] == "invalid_request_error"


def test_invalid_options_and_endpoints_are_per_request_400s(engine: TransformersEngine) -> None:
    # Given requests with a bad temperature, too large n, an unsupported endpoint, and a good one
    requests = [
        completion("temp", "hi", temperature=5),
        completion("n", "hi", n=99),
        EngineRequest("emb", "/v1/embeddings", {"input": "hi"}),
        completion("good", "hi", max_tokens=2),
    ]
    # When they run
    results = engine.run(requests)
    # Then each bad one names its problem and the good one still succeeds
    by_id = {r.custom_id: r for r in results}
    assert by_id["good"].status_code == 200
    for cid, word in (("temp", "temperature"), ("n", "'n'"), ("emb", "/v1/embeddings")):
        err = by_id[cid].error
        assert by_id[cid].status_code == 400 and err is not None and word in err["message"]


def test_temperature_zero_is_deterministic_across_batches(engine: TransformersEngine) -> None:
    # Given the same greedy request run alone and inside a batch of different lengths
    request = chat("g", "The quick brown fox", max_tokens=8, temperature=0)
    # When it runs twice
    [alone] = engine.run([request])
    together = engine.run([completion("x", "Batch inference can wait", max_tokens=3), request])
    # Then the text and counts are identical
    assert alone.body is not None and together[1].body is not None
    assert alone.body["choices"] == together[1].body["choices"]
    assert alone.output_tokens == together[1].output_tokens


def test_n_choices_are_returned_and_counted(engine: TransformersEngine) -> None:
    # Given a sampled request asking for three choices with a seed
    request = completion("n3", "The grid", max_tokens=4, temperature=0.9, n=3, seed=7)
    # When it runs twice
    first, second = engine.run([request]), engine.run([request])
    # Then there are three indexed choices, usage sums them, and the seed reproduces them
    body = first[0].body
    assert body is not None and [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert 3 <= first[0].output_tokens <= 12
    assert second[0].body is not None and second[0].body["choices"] == body["choices"]


def test_chat_n_choices_batched_with_others_sum_their_usage(engine: TransformersEngine) -> None:
    # Given unseeded sampled chat requests asking for two and one choices, batched together,
    # and a greedy one asking for two
    requests = [
        chat("two", "Plan the night shift", max_tokens=5, temperature=0.8, n=2),
        chat("one", "Plan the day shift", max_tokens=5, temperature=0.8),
        chat("greedy", "Plan the night shift", max_tokens=5, temperature=0, n=2),
    ]
    # When they run
    by_id = {r.custom_id: r for r in engine.run(requests)}
    # Then each has its n indexed choices and usage sums the completion tokens of all of them
    for cid, n in (("two", 2), ("one", 1), ("greedy", 2)):
        result = by_id[cid]
        body = result.body
        assert result.status_code == 200 and body is not None
        assert [c["index"] for c in body["choices"]] == list(range(n))
        assert body["usage"]["completion_tokens"] == result.output_tokens
        assert n <= result.output_tokens <= 5 * n
    greedy = by_id["greedy"].body
    assert greedy is not None
    assert greedy["choices"][0]["message"] == greedy["choices"][1]["message"]


def test_stop_sequence_cuts_the_text_and_the_token_count(engine: TransformersEngine) -> None:
    # Given a greedy completion and the same one stopped at a string from its own output
    [free] = engine.run(
        [completion("free", "Translate the sentence", max_tokens=12, temperature=0)]
    )
    assert free.body is not None
    text = free.body["choices"][0]["text"]
    if len(text.strip()) < 2:
        pytest.skip("the random model ended at once; nothing to cut")
    stop = text.strip()[-1]
    # When it runs with that stop sequence
    [cut] = engine.run(
        [completion("cut", "Translate the sentence", max_tokens=12, temperature=0, stop=[stop])]
    )
    # Then the text ends before the stop and counts no more tokens than the free run
    assert cut.body is not None
    cut_text = cut.body["choices"][0]["text"]
    assert stop not in cut_text and text.startswith(cut_text)
    assert cut.body["choices"][0]["finish_reason"] == "stop"
    assert cut.output_tokens <= free.output_tokens


def test_run_before_load_is_an_engine_error() -> None:
    # Given an engine with no model
    engine = TransformersEngine(device="cpu")
    # When / Then running raises with a hint
    with pytest.raises(EngineError, match="load"):
        engine.run([completion("x", "hi")])


def test_unknown_engine_option_is_rejected_with_the_known_ones() -> None:
    # Given a typo in fleet.yaml engine options / When built / Then the error lists valid keys
    with pytest.raises(EngineError, match="max_batch_size"):
        build_engine(EngineConfig(kind="transformers", options={"max_batchsize": 4}))


@pytest.mark.slow  # loads torch and transformers (about 9 s)
def test_missing_weights_directory_is_an_engine_error(tmp_path: Path) -> None:
    # Given weights that do not exist (and no hub access)
    engine = TransformersEngine(device="cpu", local_files_only=True)
    # When / Then loading fails with a message pointing at fleet.yaml
    with pytest.raises(EngineError, match="weights"):
        engine.load("ghost", str(tmp_path / "nope"))
