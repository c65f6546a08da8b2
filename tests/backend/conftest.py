"""Shared backend fixtures: the demo model is built once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from backend.demo_model import EOS_ID, ensure_demo_model
from backend.engines.torch_engine import TorchEngine


@pytest.fixture(scope="session")
def demo_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sluice-models")


@pytest.fixture(scope="session")
def demo_model_dir(demo_cache_dir: Path) -> Path:
    return ensure_demo_model("demo", demo_cache_dir)


@pytest.fixture(scope="session")
def demo_engine(demo_cache_dir: Path, demo_model_dir: Path) -> TorchEngine:
    # One thread: the test machine's cores are shared, and spinning OpenMP threads crawl there.
    return TorchEngine.load("demo", cache_dir=demo_cache_dir, threads=1)


@pytest.fixture(scope="session")
def eos_prone_engine(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TorchEngine:
    """The demo model with its (tied) EOS embedding scaled up, so EOS wins about half the steps."""
    folder = tmp_path_factory.mktemp("eos-prone")
    for f in demo_model_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    weights = load_file(demo_model_dir / "model.safetensors")
    embed = weights["model.embed_tokens.weight"].clone()
    embed[EOS_ID] *= 6.0
    weights["model.embed_tokens.weight"] = embed
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return TorchEngine.load(str(folder), threads=1)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)
