"""A trained model as ONNX, for scoring with ONNX Runtime on a CPU (experiments/export.py format=onnx).

The model is exported as predict.py runs it: loaded from the run's ``model/`` folder with its pooling
(lib/pyfunc.attach_pooling: "mean" pooling is part of the graph), inputs ``input_ids`` and
``attention_mask`` (batch and sequence length dynamic, the sequence up to the stored max_length),
outputs ``logits`` and ``mean_hidden`` (the last hidden states averaged over the real tokens: the
vectors of evaluate.py's embedding map). The exporter is torch.onnx's torch.export-based one
(``dynamo=True``, the default since torch 2.9; the TorchScript one is deprecated). ``quantize=int8``
adds a dynamically quantized copy (ONNX Runtime ``quantize_dynamic``: int8 weights per output channel
in 7 bits for the attention's MatMuls (query, key, value, output), activations quantized per call,
everything else fp32: see INT8_SETTINGS). The 7-bit range (``reduce_range``) is ONNX Runtime's advice
for x86 CPUs without VNNI, where products of 8-bit weights can saturate (not measured here).

The folder holds model.onnx, model.int8.onnx (quantized), the tokenizer files and
``titlesweep_onnx.json``: the source run, format, quantization, the SHA-256 of each .onnx file and of
the weights it was exported from, the decision threshold and max_length copied from the model folder's
titlesweep.json, and how closely the export reproduced torch. lib/pyfunc.py reads it back and refuses
an export from another run or a file that changed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lib.errors import ConfigError, UserError
from lib.pyfunc import (
    ONNX_EXTRA,
    ONNX_FILES,
    ONNX_INPUTS,
    ONNX_MANIFEST,
    ONNX_OUTPUTS,
    POOLING_KEY,
    OnnxScorer,
    TextVectors,
    attach_pooling,
    file_sha256,
    positive_probability,
    read_settings,
    weights_digest,
)

FORMATS = ("onnx",)
QUANTIZE = ("int8", "none")
PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: torch.onnx's exporter writes the graph with it
# Dynamic int8 quantization (ONNX Runtime quantize_dynamic), recorded in the export's JSON. Only the
# attention's MatMuls (query, key, value, output: the constant hidden x hidden weights) are quantized;
# the two feed-forward MatMuls stay fp32. On a MiniLM run (model=minilm, 200 steps; 2026-12-03)
# quantizing every MatMul changed the label of 1.5% of the test split and 1.9% of the CiteSeer sample
# (the feed-forward layers alone did most of it), above the 1% the int8 file may change; the
# attention's alone changed 0.25% and 0%, for 1.25x fp32's speed instead of 2.3x (one thread).
INT8_SETTINGS = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types_to_quantize": ["MatMul"],
    "nodes": "MatMul with a constant hidden x hidden weight (attention query, key, value, output)",
}
# The exported graph must reproduce torch's fp32 probabilities on these (export refuses otherwise).
CHECK_TITLES = (
    "Sparse Bayesian inference of genome networks",
    "Abstract",
    "Proceedings of the 12th International Conference on Machine Learning, pages 1-9",
    "A fast algorithm for deep belief nets",
    "Department of Computer Science, University of Toronto, Canada",
    "Notation as a Tool of",
    "On the electrodynamics of moving bodies: a reconsideration of simultaneity in inertial frames",
    "x",
)
FP32_TOLERANCE = 1e-4  # largest |P(torch) - P(ONNX fp32)| accepted on CHECK_TITLES


def require_packages() -> None:
    """One line naming the extra when onnx, onnxruntime or onnxscript is missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"format=onnx needs {', '.join(missing)}: {ONNX_EXTRA}")


class _Scored(torch.nn.Module):
    """The classifier as predict.py calls it, with the two outputs the ONNX graph returns."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        with TextVectors(self.model) as text:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=text.hidden_states
            )
        return out.logits, text.of(out, attention_mask)


def export_onnx(model_folder: Path, out: Path, run_id: str, quantize: str = "int8", say=print) -> dict:
    """Export the HF folder ``model_folder`` of run ``run_id`` into the folder ``out``; returns the record
    written there as titlesweep_onnx.json. ``say`` receives a line per step."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize={quantize}: choose one of {', '.join(QUANTIZE)}")
    model_folder, out = Path(model_folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threshold, max_length = read_settings(model_folder)
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = attach_pooling(AutoModelForSequenceClassification.from_pretrained(model_folder)).eval()
    fp32 = out / ONNX_FILES["none"]
    started = time.perf_counter()
    _export(model, tokenizer, fp32, max_length)
    say(f"exported {fp32.name} in {time.perf_counter() - started:.0f} s ({fp32.stat().st_size / 2**20:.1f} MiB)")
    ids = tokenizer(list(CHECK_TITLES), truncation=True, max_length=max_length)["input_ids"]
    reference = _torch_probabilities(model, ids, tokenizer.pad_token_id or 0)
    gaps = {"none": float(np.abs(_onnx_probabilities(fp32, ids, tokenizer) - reference).max())}
    if gaps["none"] > FP32_TOLERANCE:
        raise UserError(
            f"run={run_id}: the ONNX graph does not reproduce the model (largest probability difference "
            f"{gaps['none']:.2e} > {FP32_TOLERANCE:g} on {len(CHECK_TITLES)} titles); nothing was logged"
        )
    files, quantized = {fp32.name: file_sha256(fp32)}, 0
    if quantize == "int8":
        int8, quantized = quantize_int8(fp32, out / ONNX_FILES["int8"], int(model.config.hidden_size))
        gaps["int8"] = float(np.abs(_onnx_probabilities(int8, ids, tokenizer) - reference).max())
        files[int8.name] = file_sha256(int8)
        say(f"quantized {quantized} MatMuls of {int8.name} ({int8.stat().st_size / 2**20:.1f} MiB)")
    tokenizer.save_pretrained(out)
    record = {
        "format": "onnx",
        "source_run_id": run_id,
        "quantize": quantize,
        "files": files,
        "weights_sha256": weights_digest(model_folder),
        "decision_threshold": threshold,
        "max_length": max_length,
        "pooling": getattr(model.config, POOLING_KEY, "cls"),
        "hidden_size": int(model.config.hidden_size),
        "inputs": list(ONNX_INPUTS),
        "outputs": list(ONNX_OUTPUTS),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "opset": _opset(fp32),
        "int8": {**INT8_SETTINGS, "quantized_matmuls": quantized} if quantize == "int8" else None,
        "check": {
            "titles": len(CHECK_TITLES),
            "max_abs_probability_difference": gaps,  # against torch fp32, per file
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / ONNX_MANIFEST).write_text(json.dumps(record, indent=2))
    return record


def _export(model, tokenizer, path: Path, max_length: int) -> None:
    # Two example titles of different lengths: no dimension is 0 or 1, so torch.export keeps both dynamic.
    sample = tokenizer(["Sparse Bayesian inference of genome networks", "Abstract"], padding=True, return_tensors="pt")
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max(max_length, sample["input_ids"].shape[1]))
    axes = {0: batch, 1: sequence}
    with _quiet_exporter():
        torch.onnx.export(
            _Scored(model).eval(),
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            dynamo=True,
            input_names=list(ONNX_INPUTS),
            output_names=list(ONNX_OUTPUTS),
            dynamic_shapes={ONNX_INPUTS[0]: axes, ONNX_INPUTS[1]: axes},
            external_data=False,  # one file, one SHA-256 (2 GB limit: the largest option, mpnet, is 0.4 GB)
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress prints and its warnings (torchvision ops not installed, ...) are not ours."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def quantize_int8(fp32: Path, int8: Path, hidden_size: int) -> tuple[Path, int]:
    """The int8 copy of ``fp32`` (INT8_SETTINGS) and how many MatMuls it quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings, nodes = INT8_SETTINGS, attention_matmuls(fp32, hidden_size)
    if not nodes:
        raise UserError(f"{fp32.name}: no MatMul with a {hidden_size} x {hidden_size} weight; nothing to quantize")
    with warnings.catch_warnings(), _quiet_logger("root"):
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            op_types_to_quantize=settings["op_types_to_quantize"],
            nodes_to_quantize=nodes,
        )
    return int8, len(nodes)


def attention_matmuls(path: Path, hidden_size: int) -> list[str]:
    """Names of the MatMul nodes of ``path`` whose weight is a constant ``hidden_size`` square: the
    attention's query, key, value and output projections (the feed-forward ones are hidden x intermediate)."""
    import onnx

    graph = onnx.load(str(path)).graph
    square = {t.name for t in graph.initializer if list(t.dims) == [hidden_size, hidden_size]}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in square]


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(None if name == "root" else name)
    level = logger.level
    logger.setLevel(logging.ERROR)  # quantize_dynamic advises pre-processing at INFO / WARNING level
    try:
        yield
    finally:
        logger.setLevel(level)


@torch.inference_mode()
def _torch_probabilities(model, ids: list[list[int]], pad_id: int) -> np.ndarray:
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    return positive_probability(model(input_ids=input_ids, attention_mask=mask).logits.numpy())


def _onnx_probabilities(path: Path, ids: list[list[int]], tokenizer) -> np.ndarray:
    logits, _ = OnnxScorer(path).run(ids, tokenizer.pad_token_id or 0, batch_size=len(ids))
    return positive_probability(logits)


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
