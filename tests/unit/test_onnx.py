"""ONNX out: the fp32 export answers like torch, the int8 graph keeps its argmax, and both
serve as variants through the same Predictor, on real tiny models (BERT with token types,
MPNet without)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from distillery.onnx import OnnxClassifier, export_onnx, quantize_onnx_int8
from distillery.predictor import Predictor
from distillery.variants import (
    ONNX,
    ONNX_INT8,
    apply_variant,
    compare_variant,
    example_rows,
    full_range_int8_activations,
    quantize_linear_int8,
)
from tests.factories import qnli_like_frame, save_tiny_classifier_bundle


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    return save_tiny_classifier_bundle(root, request.param, seed=3)


def test_fp32_graph_matches_torch_and_int8_keeps_the_argmax(bundle: Path) -> None:
    rows = qnli_like_frame(48, seed=5)  # lengths vary: the graph's batch and length are dynamic
    expected = Predictor(bundle).raw_outputs(rows)
    for kind, tolerance in ((ONNX, 1e-4), (ONNX_INT8, 0.05)):
        predictor = Predictor(bundle)
        apply_variant(predictor, kind)
        assert isinstance(predictor.model, OnnxClassifier)
        outputs = predictor.raw_outputs(rows)
        assert outputs.shape == expected.shape
        assert np.abs(outputs - expected).max() <= tolerance, kind
        assert (outputs.argmax(axis=1) == expected.argmax(axis=1)).mean() == 1.0, kind


def test_an_onnx_variant_is_compared_like_int8(bundle: Path) -> None:
    rows = qnli_like_frame(32, seed=6)
    comparison = compare_variant(Predictor(bundle), ONNX, rows, "label")
    assert comparison["agreement"] == 1.0 and comparison["accuracy_drop_points"] == 0.0
    assert comparison["cpu_latency"]["variant"]["batched_ms_per_row"] > 0


def test_int8_weights_have_a_scale_per_output_channel(bundle: Path, tmp_path: Path) -> None:
    # Per-tensor scales cost a real MiniLM student 3 points of accuracy (distillery/variants.py).
    predictor = Predictor(bundle)
    quantized = [
        module
        for module in quantize_linear_int8(predictor.model).modules()
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)
    ]
    assert quantized
    for linear in quantized:
        assert linear.weight().qscheme() == torch.per_channel_affine
        assert linear.weight().q_per_channel_scales().numel() == linear.out_features

    fp32 = export_onnx(
        predictor.model, example_rows(predictor), predictor.pad_token_id, tmp_path / "m.onnx"
    )
    graph = onnx.load(quantize_onnx_int8(fp32, tmp_path / "m-int8.onnx")).graph
    scales = {tensor.name: tensor for tensor in graph.initializer}
    weights = [node.input[1] for node in graph.node if node.op_type == "MatMulInteger"]
    assert weights
    for weight in weights:
        scale = scales[weight.removesuffix("_quantized") + "_scale"]
        assert len(scale.dims) == 1 and scale.dims[0] > 1, weight


@pytest.mark.skipif(not full_range_int8_activations(), reason="needs AVX-512 VNNI")
def test_int8_activations_use_all_8_bits_where_the_cpu_has_vnni(bundle: Path) -> None:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    rows = qnli_like_frame(64, seed=7)
    predictor = Predictor(bundle)
    expected = predictor.raw_outputs(rows)
    # torch's own module halves the activations' range; ours uses all of it: half the step.
    reduced = quantize_dynamic(
        predictor.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
    )
    errors = {}
    for name, model in (("full", quantize_linear_int8(predictor.model)), ("reduced", reduced)):
        predictor.model = model.eval()
        errors[name] = float(np.abs(predictor.raw_outputs(rows) - expected).mean())
    assert 0 < errors["full"] < errors["reduced"], errors
