"""Serving as TorchScript: the traced model answers like the eager one (BERT with token types,
MPNet without; float and int8), a model the trace would get wrong stays eager, and the serving
cache uses the traced form when it matches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.serving import PredictorCache
from distillery.encoding import EncodedRow
from distillery.predictor import Predictor
from distillery.scripted import ScriptedClassifier, script_classifier, script_predictor
from distillery.variants import FLOAT, INT8, apply_variant, module_memory_bytes
from tests.factories import qnli_like_frame, save_tiny_classifier_bundle


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    return save_tiny_classifier_bundle(root, request.param, seed=4)


@pytest.mark.parametrize("variant", [FLOAT, INT8])
def test_the_traced_model_answers_like_the_eager_one(bundle: Path, variant: str) -> None:
    rows = qnli_like_frame(48, seed=7)  # lengths vary: batches pad differently than the trace
    eager = Predictor(bundle, batch_size=8)
    apply_variant(eager, variant)
    traced = Predictor(bundle, batch_size=8)
    apply_variant(traced, variant)
    assert script_predictor(traced)
    assert isinstance(traced.model, ScriptedClassifier)
    expected = eager.raw_outputs(rows)
    assert np.abs(traced.raw_outputs(rows) - expected).max() < 1e-5
    with pytest.raises(ValueError, match="logits only"):
        traced.model(**{"output_hidden_states": True})


class LengthBranch(torch.nn.Module):
    """Takes a Python branch on the sequence length: a trace keeps the branch it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(50, 2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_hidden_states: bool = False,  # as a Hugging Face classifier takes it
    ) -> object:
        logits = self.embedding(input_ids).mean(dim=1)
        if input_ids.shape[1] > 4:
            logits = logits * 2
        return type("Output", (), {"logits": logits})()


def test_a_model_the_trace_gets_wrong_stays_eager() -> None:
    def row(length: int) -> EncodedRow:
        return {"input_ids": list(range(1, length + 1)), "attention_mask": [1] * length}

    short, long = [row(2), row(3)], [row(2), row(3), row(9)]
    assert script_classifier(LengthBranch().eval(), short, short, pad_token_id=0) is not None
    assert script_classifier(LengthBranch().eval(), short, long, pad_token_id=0) is None


def test_the_serving_cache_serves_the_traced_model_when_asked(bundle: Path) -> None:
    rows = qnli_like_frame(16, seed=8)
    records = rows[["question", "sentence"]].to_dict("records")
    eager_memory = module_memory_bytes(Predictor(bundle).model)
    outputs = {}
    for torchscript in (True, False):
        cache = PredictorCache(2, torchscript=torchscript)
        served = cache.get("mdl_a", lambda: bundle)
        assert served.scripted is torchscript
        assert isinstance(served.predictor.model, ScriptedClassifier) is torchscript
        # Weights are counted whatever form they run in (the cache's memory budget).
        assert served.memory_bytes == eager_memory
        outputs[torchscript] = np.concatenate(served.forward([served.encode(records)]))
        cache.close()
    assert np.abs(outputs[True] - outputs[False]).max() < 1e-5
