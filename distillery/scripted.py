"""A loaded torch classifier as frozen TorchScript, for serving on a CPU.

Why: a forward pass of a small transformer is a few hundred short kernels, and eager PyTorch
runs Python between them, taking the GIL back after each one. In the API process the event loop
and the tokenizing threads want the GIL too, so the inference thread keeps waiting for it: with
one pure-Python busy thread beside it (the worst case), an eager MiniLM-L3 forward ran at 40 %
of its quiet speed, the same model traced at about 70 % (measured in-process, beside another
benchmark). A traced module runs the whole graph in TorchScript's interpreter, which releases
the GIL for the duration of the call. What it buys over HTTP is smaller than that: raw, the
trace is about 1.1x the eager model; an A/B of the server with it off and on (32 one-row
clients, 2 rounds) gave +9 % and -2 %, because the API's loop holds the GIL far less than a
busy thread does.

Tracing records one example's operations; shapes stay symbolic (the batch and the sequence
length are read from the tensors), but any Python branch the model took is fixed. So a traced
model is only used after it matched the eager model on rows of other batch sizes and lengths,
within `TOLERANCE`; otherwise the caller keeps the eager model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from distillery.encoding import EncodedRow, collate
from distillery.inference import compute_outputs
from distillery.onnx import INPUT_ORDER, LogitsOnly
from distillery.predictor import Predictor
from distillery.variants import EXAMPLE_TEXTS, example_rows

log = logging.getLogger("distillery.scripted")

TOLERANCE = 1e-4


class ScriptedClassifier(torch.nn.Module):
    """A frozen traced classifier that answers `model(**batch).logits` like the torch model."""

    def __init__(self, scripted: torch.jit.ScriptModule, input_names: Sequence[str]) -> None:
        super().__init__()
        self.scripted = scripted
        self.input_names = tuple(input_names)

    def forward(self, **batch: Any) -> SimpleNamespace:
        if batch.get("output_hidden_states"):
            raise ValueError("a traced classifier gives logits only, no hidden states")
        return SimpleNamespace(logits=self.scripted(*(batch[name] for name in self.input_names)))


# The example rows, and one longer, so a batch of them pads some rows.
CHECK_TEXTS = (
    *EXAMPLE_TEXTS,
    "a longer example row, with many more words than the others, so that its batch pads them",
)


def script_predictor(predictor: Predictor) -> bool:
    """Swap a CPU predictor's torch model for its traced form, when that matches; says whether
    it did. The rows are made of the model's own text columns and tokenizer."""
    rows = example_rows(predictor, CHECK_TEXTS)
    scripted = script_classifier(
        predictor.model, rows[: len(EXAMPLE_TEXTS)], rows, predictor.pad_token_id
    )
    if scripted is None:
        return False
    predictor.model = scripted.eval()
    return True


def script_classifier(
    model: torch.nn.Module,
    example_rows: Sequence[EncodedRow],
    check_rows: Sequence[EncodedRow],
    pad_token_id: int,
) -> ScriptedClassifier | None:
    """`model` (on the CPU, in eval mode) traced on `example_rows` and frozen, or None when
    tracing fails or the traced model differs from it on `check_rows`, taken in batches of one,
    two and all of them (other sizes and paddings than the example's)."""
    example = collate(list(example_rows), pad_token_id)
    input_names = [name for name in INPUT_ORDER if name in example]
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about every shape it reads as a Python number: the check below
            # is what tells whether any of them mattered.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(
                LogitsOnly(model.eval()),
                tuple(example[name] for name in input_names),
                check_trace=False,
            )
            scripted = ScriptedClassifier(torch.jit.freeze(traced.eval()), input_names)
        difference = largest_difference(model, scripted, check_rows, pad_token_id)
    except Exception:
        log.warning("could not trace the model; serving it eagerly", exc_info=True)
        return None
    if difference > TOLERANCE:
        log.warning(
            "the traced model's logits differ from the model's by %.2g; serving it eagerly",
            difference,
        )
        return None
    return scripted


def largest_difference(
    model: torch.nn.Module,
    scripted: ScriptedClassifier,
    rows: Sequence[EncodedRow],
    pad_token_id: int,
) -> float:
    """The largest absolute difference in logits between two models on `rows`, batched as one,
    two and all rows at a time."""
    return max(
        float(
            np.abs(
                compute_outputs(model, rows, batch_size=size, pad_token_id=pad_token_id)
                - compute_outputs(scripted, rows, batch_size=size, pad_token_id=pad_token_id)
            ).max()
        )
        for size in (1, 2, len(rows))
    )
