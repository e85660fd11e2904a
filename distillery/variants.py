"""CPU serving variants of a bundle, and what each costs in accuracy against the float model.

`int8` is PyTorch dynamic quantization of every `nn.Linear`: weights stored as int8 (a scale per
output channel), activations quantized on the fly per batch. `onnx` runs the model's ONNX export in
ONNX Runtime, and `onnx-int8` that graph quantized by ONNX Runtime (distillery/onnx.py). Each is
rebuilt from the bundle's float weights when the model is loaded (a second for int8, seconds for an
ONNX export), so a variant needs no weights of its own on disk: only the record of how much
accuracy it gives up, measured once.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from distillery.encoding import EncodedRow
from distillery.inference import softmax
from distillery.metrics import classification_metrics, regression_metrics
from distillery.onnx import (
    FP32_GRAPH,
    INT8_GRAPH,
    OnnxClassifier,
    export_onnx,
    quantize_onnx_int8,
)
from distillery.predictor import Predictor, label_ids
from distillery.report import cpu_latency
from distillery.tables import TableError

FLOAT = "float"
INT8 = "int8"
ONNX = "onnx"
ONNX_INT8 = "onnx-int8"
VARIANT_KINDS = (FLOAT, INT8, ONNX, ONNX_INT8)
# Recorded with each comparison, since a variant is rebuilt at load time from the recipe of the
# code that loads it: a comparison without one scored int8 weights quantized per tensor.
RECIPES = {
    FLOAT: "the bundle's float weights",
    INT8: "torch dynamic quantization, int8 weights per output channel",
    ONNX: "ONNX Runtime, fp32 export",
    ONNX_INT8: "ONNX Runtime dynamic quantization, int8 weights per output channel",
}


class VariantError(ValueError):
    """A variant cannot be built here (unknown kind, or not on this device)."""


@cache  # a CPU's flags do not change while the process runs; read /proc/cpuinfo once
def cpu_int8_instructions() -> tuple[str, ...]:
    """The int8 dot-product instructions this CPU has (Linux; none found elsewhere)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags = set(value.split())
            break
    return tuple(sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}))


def full_range_int8_activations() -> bool:
    """Whether torch's int8 kernels here sum u8 x s8 products into 32 bits: with AVX-512 VNNI
    (AMX CPUs have it too; torch's own VNNI check looks for it alone). With AVX2's instruction,
    pairs are summed into 16 bits, which full-range activations can saturate; CPUs with only
    AVX-VNNI keep torch's reduced range, as it is not known here which path fbgemm takes."""
    return "avx512_vnni" in cpu_int8_instructions()


def variant_recipe(kind: str) -> str:
    """How `kind` is built on this machine's CPU."""
    if kind == INT8 and full_range_int8_activations():
        return f"{RECIPES[kind]}, activations over all 8 bits (AVX-512 VNNI)"
    return RECIPES[kind]


def quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with every nn.Linear dynamically quantized to int8 (CPU only), one
    weight scale per output channel, activations over their full 8 bits where the CPU allows.

    Per channel, not torch's per-tensor default: on a 3-layer MiniLM student that had learned
    QNLI (0.700 on bench/serve.py's test rows), per-tensor int8 agreed with the float model on
    0.921 of 2,207 rows it never trained on and lost 3.1 points of accuracy; per channel agreed
    on 0.949 and lost 0.7, at the same speed; full-range activations on top, 0.976.
    """
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated in favour of torchao, a separate
        # package; the eager dynamic path still works and needs nothing more installed.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        mapping = {torch.nn.Linear: _full_range_linear()} if full_range_int8_activations() else None
        return quantize_dynamic(
            model,
            {torch.nn.Linear: per_channel_dynamic_qconfig},
            dtype=torch.qint8,
            mapping=mapping,
            inplace=False,
        )


@cache  # one class, imported late: importing torch.ao.nn.quantized warns of its deprecation
def _full_range_linear() -> type[torch.nn.Module]:
    """torch's dynamic int8 Linear with its activations quantized over all 8 bits.

    torch halves their range (`reduce_range`) so that the 16-bit pair sums of AVX2's u8 x s8
    instruction cannot saturate; AVX-512 VNNI adds the products straight into 32 bits, where the
    full range is safe, and the coarser step is what the int8 model lost most to.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeDynamicLinear(DynamicLinear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = self._packed_params._packed_params
            output = torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)
            return output.to(x.dtype)

    return FullRangeDynamicLinear


def apply_variant(predictor: Predictor, kind: str) -> None:
    """Turn a loaded float predictor into `kind` in place."""
    if kind == FLOAT:
        return
    if kind not in VARIANT_KINDS:
        raise VariantError(f"unknown variant '{kind}'; variants are: {', '.join(VARIANT_KINDS)}")
    if predictor.device != "cpu":
        raise VariantError(f"the {kind} variant runs on CPU only; serve the float model on a GPU")
    if kind == INT8:
        predictor.model = quantize_linear_int8(predictor.model).eval()
        return
    with tempfile.TemporaryDirectory(prefix="distillery-onnx-") as scratch:
        # ONNX Runtime reads the graph into memory: the files need not outlive the session.
        graph = Path(scratch) / FP32_GRAPH
        export_onnx(predictor.model, example_rows(predictor), predictor.pad_token_id, graph)
        if kind == ONNX_INT8:
            graph = quantize_onnx_int8(graph, Path(scratch) / INT8_GRAPH)
        predictor.model = OnnxClassifier(graph).eval()


# Two short rows: the shapes an export or a trace records.
EXAMPLE_TEXTS = ("an example row", "another")


def example_rows(predictor: Predictor, texts: Sequence[str] = EXAMPLE_TEXTS) -> list[EncodedRow]:
    """Encoded rows of the model's columns, each column holding `texts`."""
    columns = {column: list(texts) for column in predictor.metadata.text_columns}
    return predictor.encode(pd.DataFrame(columns))


def module_memory_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's weights, counting packed quantized weights too."""
    total = 0
    for value in module.state_dict().values():
        for tensor in _tensors_in(value):
            total += tensor.numel() * tensor.element_size()
    return total


def _metrics(predictor: Predictor, outputs: np.ndarray, labels: pd.Series) -> dict[str, float]:
    if predictor.problem_type == "regression":
        return regression_metrics(labels.astype(float).to_numpy(), outputs[:, 0])
    return classification_metrics(label_ids(labels, predictor.metadata.labels), softmax(outputs))


def _tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for item in value for t in _tensors_in(item)]
    return []


def compare_variant(
    predictor: Predictor, kind: str, frame: pd.DataFrame, label_column: str
) -> dict[str, Any]:
    """Score the float model and its `kind` variant on the same labelled rows.

    Returns both metric dicts, the rows used, how often the two agree on the predicted class
    (or their mean absolute difference, for regression), for classifiers the accuracy the
    variant gives up in percentage points (negative when it happens to do better), and both
    CPU latencies per row (distillery/report.py's measure) with the speed-up.
    """
    if label_column not in frame.columns:
        raise TableError(
            f"label column '{label_column}' not found; columns are: {', '.join(frame.columns)}",
            field="label",
        )
    float_model = predictor.model
    float_outputs = predictor.raw_outputs(frame)
    float_latency = cpu_latency(predictor, frame)
    apply_variant(predictor, kind)
    try:
        variant_outputs = predictor.raw_outputs(frame)
        variant_latency = cpu_latency(predictor, frame)
    finally:
        predictor.model = float_model
    float_metrics = _metrics(predictor, float_outputs, frame[label_column])
    variant_metrics = _metrics(predictor, variant_outputs, frame[label_column])
    result: dict[str, Any] = {
        "recipe": variant_recipe(kind),
        "rows": len(frame),
        "float": float_metrics,
        "variant": variant_metrics,
        # Measured here, one after the other: what the variant buys on this machine's CPU.
        "cpu_latency": {"float": float_latency, "variant": variant_latency},
        "cpu_speedup_batched": float_latency["batched_ms_per_row"]
        / variant_latency["batched_ms_per_row"],
    }
    if predictor.problem_type == "regression":
        result["mean_abs_difference"] = float(np.mean(np.abs(float_outputs - variant_outputs)))
    else:
        result["agreement"] = float(
            np.mean(float_outputs.argmax(axis=1) == variant_outputs.argmax(axis=1))
        )
        result["accuracy_drop_points"] = round(
            100 * (float_metrics["accuracy"] - variant_metrics["accuracy"]), 4
        )
    return result
