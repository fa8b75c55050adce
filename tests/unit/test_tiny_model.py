"""The tiny model builder: offline, seeded, complete, and reused when already built."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import unavailable
from workers.engines.tiny_model import build_tiny_model


@pytest.fixture(autouse=True)
def _torch() -> None:
    """Skip locally, fail under CI=true, without torch (the cpu extra)."""
    if importlib.util.find_spec("torch") is None:
        unavailable("torch (the tiny model needs the cpu extra: pip install -e '.[cpu]')")


def digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_builds_the_same_model_and_another_seed_does_not(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Given the session's tiny model (seed 0) / When rebuilt elsewhere with seeds 0 and 1
    again = build_tiny_model(tmp_path / "again")
    other = build_tiny_model(tmp_path / "other", seed=1)
    # Then the weights are identical for the same seed and differ for another
    assert digest(again) == digest(tiny_model_dir)
    assert digest(other) != digest(tiny_model_dir)


def test_built_model_has_the_documented_shape(tiny_model_dir: Path) -> None:
    # Given the built directory / When its config and tokenizer are read
    config = json.loads((tiny_model_dir / "config.json").read_text())
    vocab = json.loads((tiny_model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    # Then it is the small Llama of TESTING.md with a byte-level vocabulary up to 512
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)
    assert config["max_position_embeddings"] == 256
    assert 256 < len(vocab) <= 512 and {"<unk>", "<s>", "</s>"} <= set(vocab)
    assert config["vocab_size"] >= len(vocab)


def test_existing_model_is_reused_not_rebuilt(tiny_model_dir: Path) -> None:
    # Given a built model / When built again at the same path
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    build_tiny_model(tiny_model_dir)
    # Then nothing was rewritten
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before
