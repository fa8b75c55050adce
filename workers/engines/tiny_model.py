"""Builds a tiny random-weight Llama with a byte-level BPE tokenizer, offline, for tests and the demo."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = (
    "The grid is cleaner at night when the wind blows over the North Sea.",
    "Batch inference can wait for the hour with the lowest carbon intensity.",
    "A scheduler places shards of requests on edge sites and time slots.",
    "Summarise the following document in three sentences.",
    "Translate the sentence into French, then into German.",
    "The quick brown fox jumps over the lazy dog, 0123456789 times.",
    "Energy is measured in kilowatt hours; carbon in grams of CO2.",
    "<|system|> <|user|> <|assistant|> You are a helpful assistant.",
)


#: Context of the sample fleet's and the demo's tiny models, in tokens (their fleet.yaml
#: ``context_tokens``): a request file written for a hosted API (prompts of a few hundred tokens,
#: ``max_tokens`` up to a few thousand) fits. The model uses RoPE, which has no learned position
#: table, so a longer context costs no weights and no build time.
SAMPLE_CONTEXT = 4096

# vLLM's CPU attention kernels need a head size they support (64, not the default's 8).
VLLM_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
}


def build_tiny_vllm_model(path: str | Path, *, seed: int = 0) -> Path:
    """Build the tiny Llama with head size 64 and a 512-token context, which vLLM-CPU can run."""
    return build_tiny_model(path, seed=seed, **VLLM_SHAPE)


def build_tiny_model(
    path: str | Path,
    *,
    vocab_size: int = 512,
    seed: int = 0,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 256,
) -> Path:
    """Build a ~40k-parameter Llama and its tokenizer into ``path`` (no download).

    The tokenizer is a byte-level BPE trained on a few sentences (special tokens ``<unk>``,
    ``<s>``, ``</s>``) with a simple chat template; the weights are random but seeded, so the
    same ``seed`` gives the same model. Outputs are gibberish; token counts and timings are real.
    Building takes about a second; an existing model in ``path`` is reused when it has the
    same context (one built with another is replaced).

    Args:
        path: Directory to write ``config.json``, the weights and the tokenizer files into.
        vocab_size: Target BPE vocabulary size (the byte alphabet alone is 256).
        seed: Seed for the random weights.
        hidden_size: Width (head size is ``hidden_size / num_attention_heads``).
        intermediate_size: MLP width.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads.
        max_position_embeddings: Context length of the model and the tokenizer.

    Returns:
        The model directory, loadable with ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        EngineError: torch, transformers or tokenizers are not installed (the ``cpu`` extra).
    """
    from scheduler.errors import EngineError

    target = Path(path)
    if _complete(target, max_position_embeddings):
        return target
    try:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as e:
        raise EngineError(
            f"building the tiny model needs torch, transformers and tokenizers ({e}); "
            "install the cpu extra: pip install 'gridshift[cpu]'"
        ) from e

    specials = ["<unk>", "<s>", "</s>"]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        padding_side="left",
        model_max_length=max_position_embeddings,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    # Written beside the target and renamed into place, so a crash never leaves half a model.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        if target.exists() and not _complete(target, max_position_embeddings):
            shutil.rmtree(target)  # half a model, or one built with another context
        if not target.exists():
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(path: Path, context: int) -> bool:
    """Whether ``path`` holds a whole tiny model built with a ``context``-token context."""
    files = ("config.json", "tokenizer.json", "model.safetensors")
    if not all((path / name).is_file() for name in files):
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("max_position_embeddings") == context
