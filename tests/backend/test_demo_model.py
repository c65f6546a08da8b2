"""The built-in demo model: identical on every build, loadable by transformers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend.demo_model import PRESETS, ensure_demo_model, llama_config


def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(folder / "model.safetensors").items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_two_builds_are_identical(demo_model_dir: Path, tmp_path: Path) -> None:
    other = ensure_demo_model("demo", tmp_path)
    assert other != demo_model_dir
    assert weights_digest(other) == weights_digest(demo_model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (other / name).read_bytes() == (demo_model_dir / name).read_bytes()


def test_a_built_model_is_reused_not_rebuilt(demo_cache_dir: Path, demo_model_dir: Path) -> None:
    before = (demo_model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model("demo", demo_cache_dir) == demo_model_dir
    assert (demo_model_dir / "model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in demo_cache_dir.iterdir()] == [demo_model_dir.name]


def test_the_cache_dir_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path))
    assert ensure_demo_model("demo").parent == tmp_path


def test_it_loads_in_transformers_with_a_chat_template(demo_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.tie_word_embeddings
    assert len(tokenizer) == model.config.vocab_size == PRESETS["demo"].vocab
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer("Hello world")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello world"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|bos|><|user|>\nHi<|eos|>\n<|assistant|>\n"
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), PRESETS["demo"].vocab)
    assert torch.isfinite(logits).all()


def test_the_bench_preset_has_the_promised_shape() -> None:
    from transformers import LlamaForCausalLM

    config = llama_config(PRESETS["bench"])
    with torch.device("meta"):
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    params = sum(p.numel() for p in model.parameters())
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (512, 8, 8)
    assert (config.intermediate_size, config.vocab_size) == (1376, 4096)
    assert config.tie_word_embeddings
    assert 26_000_000 < params < 28_000_000


def test_unknown_presets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        ensure_demo_model("huge", tmp_path)  # type: ignore[arg-type]


def test_weights_do_not_depend_on_the_cpu_instruction_set(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    """Builds again with torch's portable (non-SIMD) kernels: the weights must not change."""
    script = (
        "import sys; from pathlib import Path; from backend.demo_model import ensure_demo_model;"
        "print(ensure_demo_model('demo', Path(sys.argv[1])))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    portable = Path(done.stdout.strip().splitlines()[-1])
    assert weights_digest(portable) == weights_digest(demo_model_dir)
