"""Suite-wide setup: the trained semantic verifier, made before any test starts a gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.semantic.train_verifier import ensure_trained
from cache.semantic.verifier import default_cache_dir


@pytest.fixture(scope="session", autouse=True)
def trained_verifier() -> Path:
    """`make install` trains it; after a change to the corpus or the training code this
    trains it again once (minutes), instead of inside a gateway's timed start."""
    return ensure_trained(default_cache_dir())
