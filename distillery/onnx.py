"""ONNX out: a classifier as an ONNX graph (fp32, and int8 by ONNX Runtime's dynamic
quantization) and an ONNX Runtime forward pass that stands in for the torch model.

The graph is exported by `torch.onnx.export` (its dynamo exporter, with batch and sequence
length dynamic) from the model's own forward, so what runs in ONNX Runtime is what ran in torch;
tokenizing stays in Python with the bundle's tokenizer, as it does for the torch model.
`OnnxClassifier` answers like a Hugging Face classifier (`model(**batch).logits`), so the batched
forward, the variant comparison and serving use it unchanged.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from distillery.encoding import EncodedRow, collate

FP32_GRAPH = "model.onnx"
INT8_GRAPH = "model-int8.onnx"
# The inputs a tokenizer may give, in the order the exported graph takes them.
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


class LogitsOnly(torch.nn.Module):
    """The classifier with the logits alone as output: what a graph needs (a Hugging Face
    output object is not a tensor)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def export_onnx(
    model: torch.nn.Module, example_rows: list[EncodedRow], pad_token_id: int, path: Path
) -> Path:
    """Write `model` as an fp32 ONNX graph taking the rows' inputs, batch and length dynamic."""
    example = collate(example_rows, pad_token_id)
    input_names = [name for name in INPUT_ORDER if name in example]
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    wrapped = LogitsOnly(model.cpu().eval())
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter narrates each stage on stdout and warns about every traced branch.
    with warnings.catch_warnings(), _quiet("torch.onnx"), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            tuple(example[name] for name in input_names),
            str(path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_shapes=tuple({0: batch, 1: length} for _ in input_names),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def quantize_onnx_int8(fp32: Path, int8: Path) -> Path:
    """ONNX Runtime's dynamic quantization: int8 weights with a scale per output channel,
    activations quantized per batch. Per channel, as for the torch int8 variant: on the same
    MiniLM student, per-tensor weights agreed with the float model on 0.916 of 2,207 rows and
    lost 3.0 points; per channel agreed on 0.971 and lost none, at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet("root"):
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return int8


class OnnxClassifier(torch.nn.Module):
    """An ONNX Runtime session that answers `model(**batch).logits` like the torch model."""

    def __init__(self, graph: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.graph = graph
        self.session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, **batch: Any) -> SimpleNamespace:
        if batch.get("output_hidden_states"):
            raise ValueError("an ONNX classifier gives logits only, no hidden states")
        feeds = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        (logits,) = self.session.run(["logits"], feeds)
        return SimpleNamespace(logits=torch.from_numpy(logits))


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Lower a chatty logger to errors for the duration of a block."""
    logger = logging.getLogger(None if name == "root" else name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_onnx_package(
    model: torch.nn.Module,
    tokenizer: Any,
    check_rows: list[EncodedRow],
    pad_token_id: int,
    folder: Path,
) -> dict[str, Any]:
    """Write `folder/model.onnx` (fp32), `folder/model-int8.onnx` and the tokenizer, and check
    both graphs against torch on `check_rows`: the fp32 graph's largest difference in logits
    and the int8 graph's argmax agreement. Returns that check (the caller records it)."""
    from distillery.inference import compute_outputs

    fp32 = export_onnx(model, check_rows[:2], pad_token_id, folder / FP32_GRAPH)
    int8 = quantize_onnx_int8(fp32, folder / INT8_GRAPH)
    tokenizer.save_pretrained(folder)
    expected = compute_outputs(model, check_rows, batch_size=32, pad_token_id=pad_token_id)
    outputs = {
        name: compute_outputs(
            OnnxClassifier(graph), check_rows, batch_size=32, pad_token_id=pad_token_id
        )
        for name, graph in (("fp32", fp32), ("int8", int8))
    }
    return {
        "rows": len(check_rows),
        "fp32_max_abs_difference": float(np.abs(outputs["fp32"] - expected).max()),
        "int8_max_abs_difference": float(np.abs(outputs["int8"] - expected).max()),
        # For a classifier; a regression model's single output always "agrees".
        "int8_argmax_agreement": float(
            (outputs["int8"].argmax(axis=1) == expected.argmax(axis=1)).mean()
        ),
        "files": [FP32_GRAPH, INT8_GRAPH],
    }
