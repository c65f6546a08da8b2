"""Builds the built-in demo LLM: seeded random weights, so everything runs offline for real."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

Preset = Literal["demo", "bench"]

VERSION = "v3"
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # special tokens come first in the trained vocabulary
SEED = 20240611
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class _Shape:
    """Architecture numbers of one preset."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    context: int = 2048


PRESETS: dict[str, _Shape] = {
    # Head size 32: the smallest that vLLM's CPU attention kernels implement.
    "demo": _Shape(hidden=64, layers=2, heads=2, intermediate=176, vocab=1024),
    "bench": _Shape(hidden=512, layers=8, heads=8, intermediate=1376, vocab=4096),
}

_SYLLABLE_TEXT = (
    "ka lo mi ne ru sa ti vo ba de fi gu ha je po qu ze xa wy ol an er in on th st ch sh re ing "
    "ed es at or al le the and you are is it be"
)
_SYLLABLES = tuple(_SYLLABLE_TEXT.split())
_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "What is the capital of France? Paris is the capital of France.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048.",
    "Caches answer repeated questions; batches share one forward pass.",
    "Ünïcödé, émojis 🙂 and 漢字 keep byte-level tokens honest.",
)


def default_cache_root() -> Path:
    """Where built models live unless told otherwise."""
    env = os.environ.get("SLUICE_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "sluice" / "models"


def ensure_demo_model(preset: Preset, cache_dir: Path | None = None) -> Path:
    """Returns the folder of the preset's model, building it once (atomically) if missing."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; expected one of {sorted(PRESETS)}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    final = root / f"{preset}-{VERSION}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    logger.info("building the %r demo model into %s (once)", preset, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{preset}-building-", dir=root))
    try:
        _build(PRESETS[preset], tmp)
        try:
            tmp.rename(final)
        except OSError:
            # Another process finished first; its folder is complete (the rename is atomic).
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _corpus() -> list[str]:
    """A fixed pseudo-text corpus: same on every machine, rich enough for any vocab size."""
    rng = random.Random(SEED)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    lines = list(_SENTENCES)
    for _ in range(4000):
        n = rng.randint(3, 12)
        lines.append(" ".join(rng.choice(words) for _ in range(n)) + rng.choice(".!?,"))
    return lines


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """Trains the byte-level BPE tokenizer (deterministic for a fixed corpus)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    if [tok.token_to_id(t) for t in (PAD, BOS, EOS)] != [PAD_ID, BOS_ID, EOS_ID]:
        raise RuntimeError("special token ids moved")
    return tok


def llama_config(shape: _Shape) -> Any:
    """The transformers LlamaConfig of a preset (special token ids follow the tokenizer's)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        dtype="float32",
    )


def _build(shape: _Shape, out: Path) -> None:
    """Writes config, safetensors weights, tokenizer and generation config into `out`."""
    from transformers import GenerationConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = build_tokenizer(shape.vocab)
    config = llama_config(shape)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    _seed_weights(model)
    model.save_pretrained(out, safe_serialization=True)
    generation = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID
    )
    generation.save_pretrained(out)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=shape.context,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    _portable_tokenizer_config(out / "tokenizer_config.json")


def _portable_tokenizer_config(path: Path) -> None:
    """Names the class every transformers release (and vLLM) knows, and inlines the template."""
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    data["chat_template"] = CHAT_TEMPLATE
    data["add_bos_token"] = True
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _seed_weights(model: torch.nn.Module) -> None:
    """Fills every parameter from one seeded generator, in a fixed (sorted) order.

    Uniform draws scaled in float64: torch's normal sampler takes different code paths (and
    rounds differently) per CPU instruction set, uniform draws and IEEE arithmetic do not.
    """
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if param.dim() == 1:
                param.fill_(1.0)  # norm scales
                continue
            # Tied embeddings double as the output layer: a 3/sqrt(hidden) scale gives logits
            # of a few units, so greedy picks are clear-cut and sampling is not flat noise.
            fan_in = param.shape[1]
            std = (3.0 if "embed_tokens" in name else 1.0) / fan_in**0.5
            unit = torch.rand(param.shape, generator=gen, dtype=torch.float64)
            param.copy_(((unit * 2.0 - 1.0) * (std * 3.0**0.5)).to(torch.float32))
