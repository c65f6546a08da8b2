"""int8 matrix products for the exported embedding model, each text's vector its own.

ONNX Runtime's dynamic quantisation gives a whole call one activation scale, so an outlier
token or channel coarsens every other value (vectors moved by up to 0.06 in cosine) and a
text's vector depends on what else is in the call. Here every token row gets its own scale
and zero point (uint8, asymmetric), weights get one scale per output column (int8,
symmetric), and the product runs on ONNX Runtime's integer kernels (`MatMulInteger`, VNNI
where the CPU has it). Before that, SmoothQuant (Xiao et al., 2023) moves the channels'
outliers from the activations into the weights, where per-column scales absorb them: a
per-channel divide folded into the weights, exact in fp32, with the channel ranges taken from
the fp32 model on a few generic questions. Measured in docs/cache.md (bench/int8_quality.py).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import ConfigError

log = logging.getLogger("sluice.cache")

# Share of each channel's outlier moved from the activations into the weights: SmoothQuant's
# default, fixed up front rather than fitted to the questions we measure on.
SMOOTHING_ALPHA = 0.5
# Below this cosine to the fp32 vectors on the calibration questions something is broken, not
# just imprecise (all-MiniLM-L6-v2 gives 0.999 on a VNNI CPU): the rewrite, for another model,
# or integer kernels that saturate (ONNX Runtime warns of uint8 x int8 on CPUs without VNNI).
MIN_SANE_COSINE = 0.98
MIN_OPSET = 18  # ReduceMax/ReduceMin take their axes as an input from opset 18
BLOCKED_QUANTIZE_OPSET = 21

# Generic questions of many kinds, for the activations' channel ranges. Written for this
# purpose, none taken from the evaluation pair files (tests check that).
CALIBRATION_QUESTIONS = (
    "How do I reset my router to factory settings?",
    "What time does the pharmacy on Main Street close on Sundays?",
    "Can you explain the difference between a Roth IRA and a traditional IRA?",
    "Write a Python function that reverses a linked list.",
    "Why is the sky blue?",
    "How many tablespoons are in a quarter cup?",
    "What's the best way to learn Spanish in six months?",
    "My package hasn't arrived after 10 days, what should I do?",
    "Is it safe to take ibuprofen with coffee?",
    'Translate "good morning" into Japanese.',
    "How do I cancel my subscription before the next billing date?",
    "What are the symptoms of a vitamin D deficiency?",
    "Recommend a fantasy novel for a 12-year-old.",
    "How far is it from Berlin to Prague by train?",
    "Why does my laptop battery drain so fast when it's asleep?",
    "Summarize the plot of Hamlet in three sentences.",
    "What is the capital of Australia?",
    "How do I convert 72 degrees Fahrenheit to Celsius?",
    "Can I bring a power bank on a plane in my checked luggage?",
    "What does HTTP status code 503 mean?",
    "How long should I boil an egg for a runny yolk?",
    "Explain recursion to a five-year-old.",
    "Which is cheaper, leasing or buying a car for 3 years?",
    "What's the weather usually like in Lisbon in October?",
    "How do I undo the last commit in git without losing my changes?",
    "Is there a fee for changing my flight date?",
    "Why can't I log in to my account on the mobile app?",
    "What are good stretches for lower back pain?",
    "How much protein does a 70 kg adult need per day?",
    "Who painted the ceiling of the Sistine Chapel?",
    "How do I enable dark mode in my email app?",
    "What's the difference between affect and effect?",
    "Can dogs eat grapes?",
    "How do I make sourdough starter from scratch?",
    "What is the tax deadline for self-employed people in the UK?",
    "Give me a SQL query that counts orders per customer.",
    "Does the hotel offer free parking for guests?",
    "How do noise-cancelling headphones work?",
    "What should I pack for a week of hiking in the Alps?",
    "Is it worth upgrading from 16 GB to 32 GB of RAM for video editing?",
    "How do I get a refund for a damaged item?",
    "What's a good name for a golden retriever puppy?",
    "When was the Eiffel Tower built?",
    "How many calories are in a banana?",
    "How do I stop my cat from scratching the sofa?",
    "Explain how compound interest works with an example.",
    "What are the opening hours of the museum on public holidays?",
    "Why isn't my washing machine draining?",
    "Can I use my credit card abroad without extra charges?",
    "What is the population of Canada?",
    "How do I write a cover letter for a marketing job?",
    "Should I water succulents every day?",
    "What's the fastest way to get from the airport to downtown?",
    "How do I change the language settings on my phone?",
    "Is 5G harmful to health?",
    "What is the difference between a virus and a bacterium?",
    "Please rewrite this email to sound more polite.",
    "How long does it take to charge an electric car at home?",
    "I locked myself out of my car, who should I call?",
    "What are the rules of chess castling?",
    "How do I remove a red wine stain from a carpet?",
    "What year did the Berlin Wall fall?",
    "How can I improve my credit score quickly?",
    "Which vaccines do I need before travelling to Kenya?",
)


def quantize_int8(
    fp32_file: Path,
    out_file: Path,
    tokenizer_file: Path,
    input_names: tuple[str, ...],
    encoding_fields: dict[str, str],
) -> float:
    """Writes the int8 graph of `fp32_file` to `out_file`; returns the lowest cosine between
    its vectors and fp32's on the calibration questions (a sanity check, logged)."""
    import onnx
    from tokenizers import Tokenizer

    model = onnx.load(str(fp32_file))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ConfigError(f"int8 needs an ONNX graph of opset {MIN_OPSET}+, {fp32_file} is {opset}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    feeds = []
    for encoding in tokenizer.encode_batch(list(CALIBRATION_QUESTIONS)):
        feeds.append(
            {n: np.array([getattr(encoding, encoding_fields[n])], np.int64) for n in input_names}
        )
    groups = _matmuls_by_input(model)
    ranges = _channel_ranges(model, list(groups), feeds)
    _rewrite(model, groups, ranges)
    onnx.save(model, str(out_file))
    worst = _worst_cosine(fp32_file, out_file, feeds)
    log.info("int8 embedding model: cosine to fp32 >= %.4f on the calibration questions", worst)
    if worst < MIN_SANE_COSINE:
        out_file.unlink(missing_ok=True)
        raise ConfigError(
            f"int8 quantisation of {fp32_file.parent} moves vectors too far (cosine {worst:.3f} "
            "to fp32 on sample questions); use the onnx backend for this model"
        )
    return worst


def _matmuls_by_input(model: Any) -> dict[str, list[Any]]:
    """MatMul nodes with a constant 2-D weight (the dense layers), by their activation input."""
    weights = {t.name: t for t in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    groups: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is not None and len(w.dims) == 2 and uses[w.name] == 1:  # tied weights stay fp32
            groups[node.input[0]].append(node)
    return groups


def _channel_ranges(model: Any, names: list[str], feeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest |value| per channel of each dense layer's input, over the calibration texts
    (run one at a time, so no padding enters the ranges)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    top: dict[str, Any] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            row = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            top[name] = np.maximum(top[name], row) if name in top else row
    return top


def _rewrite(model: Any, groups: dict[str, list[Any]], ranges: dict[str, Any]) -> None:
    """Each dense layer becomes: smoothing divide, per-token uint8 quantisation (shared by the
    layers reading the same input), integer product, zero-point correction, rescale."""
    from onnx import TensorProto, helper, numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    added: list[Any] = []

    def const(name: str, value: Any) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    axes = const("int8/axes", np.array([-1], np.int64))
    eps = const("int8/eps", np.array(1e-12, np.float32))
    inv255 = const("int8/inv255", np.array(1 / 255, np.float32))
    zero = const("int8/zero", np.array(0.0, np.float32))
    nodes: list[Any] = []
    quantized: dict[str, tuple[str, str, str]] = {}
    used_weights: set[str] = set()
    dense = {n.output[0] for layers in groups.values() for n in layers}
    for node in model.graph.node:
        activation = node.input[0]
        if node.output[0] not in dense:
            nodes.append(node)
            continue
        p = f"int8/{activation}"
        if activation not in quantized:
            layer_weights = [numpy_helper.to_array(weights[n.input[1]]) for n in groups[activation]]
            w_top = np.max([np.abs(w).max(axis=1) for w in layer_weights], axis=0)
            a_top = ranges[activation]
            smooth = (
                np.maximum(a_top, 1e-5) ** SMOOTHING_ALPHA
                / np.maximum(w_top, 1e-5) ** (1 - SMOOTHING_ALPHA)
            ).astype(np.float32)
            inv_smooth = const(f"{p}/inv_smooth", (1 / smooth).astype(np.float32))
            # The row's range is widened to take in 0, so the zero point fits in uint8 and
            # one blocked QuantizeLinear (a block per row) does divide, round, shift and clip.
            nodes += [
                helper.make_node("Mul", [activation, inv_smooth], [f"{p}/x"]),
                helper.make_node("ReduceMax", [f"{p}/x", axes], [f"{p}/max"], keepdims=1),
                helper.make_node("ReduceMin", [f"{p}/x", axes], [f"{p}/min"], keepdims=1),
                helper.make_node("Max", [f"{p}/max", zero], [f"{p}/max0"]),
                helper.make_node("Min", [f"{p}/min", zero], [f"{p}/min0"]),
                helper.make_node("Sub", [f"{p}/max0", f"{p}/min0"], [f"{p}/range"]),
                helper.make_node("Max", [f"{p}/range", eps], [f"{p}/range+"]),
                helper.make_node("Mul", [f"{p}/range+", inv255], [f"{p}/scale"]),
                helper.make_node("Div", [f"{p}/min0", f"{p}/scale"], [f"{p}/min_q"]),
                helper.make_node("Round", [f"{p}/min_q"], [f"{p}/zero"]),  # minus the zero point
                helper.make_node("Neg", [f"{p}/zero"], [f"{p}/zp_f"]),
                helper.make_node("Cast", [f"{p}/zp_f"], [f"{p}/zp"], to=TensorProto.UINT8),
                helper.make_node(
                    "QuantizeLinear",
                    [f"{p}/x", f"{p}/scale", f"{p}/zp"],
                    [f"{p}/q"],
                    axis=-1,
                    block_size=int(ranges[activation].shape[0]),
                ),
            ]
            quantized[activation] = (f"{p}/q", f"{p}/scale", f"{p}/zero")
            for n, w in zip(groups[activation], layer_weights, strict=True):
                weights[n.input[1]].CopyFrom(
                    numpy_helper.from_array(w * smooth[:, None], n.input[1])
                )
        q, scale, zero_q = quantized[activation]
        w = numpy_helper.to_array(weights[node.input[1]])
        used_weights.add(node.input[1])
        w_scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        o, name = node.output[0], f"int8/{node.input[1]}"
        # Per row x ~ scale * (q + zero), so x @ W ~ scale * (q @ Wq + zero * colsum(Wq)) * w_scale
        nodes += [
            helper.make_node("MatMulInteger", [q, const(f"{name}/w", w_q)], [f"{name}/i32"]),
            helper.make_node("Cast", [f"{name}/i32"], [f"{name}/f"], to=TensorProto.FLOAT),
            helper.make_node(
                "Mul",
                [zero_q, const(f"{name}/colsum", w_q.sum(axis=0, dtype=np.float32))],
                [f"{name}/zc"],
            ),
            helper.make_node("Add", [f"{name}/f", f"{name}/zc"], [f"{name}/fz"]),
            helper.make_node(
                "Mul", [f"{name}/fz", const(f"{name}/scale", w_scale)], [f"{name}/fw"]
            ),
            helper.make_node("Mul", [f"{name}/fw", scale], [o]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for entry in model.opset_import:  # blocked QuantizeLinear (one scale per row) is opset 21
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, BLOCKED_QUANTIZE_OPSET)
    kept = [t for t in model.graph.initializer if t.name not in used_weights]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *added])


def _worst_cosine(fp32_file: Path, int8_file: Path, feeds: list[dict[str, Any]]) -> float:
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        for f in (fp32_file, int8_file)
    ]
    worst = 1.0
    for feed in feeds:
        a, b = (s.run(None, feed)[0][0] for s in sessions)
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return worst
