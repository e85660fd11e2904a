"""The serving cache with real tiny bundles: LRU eviction by count and bytes, one load per key,
readiness, int8 variants; and the process settings the API applies when it makes the cache."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from app.serving import PredictorCache, make_predictor_cache
from distillery.bundle import BundleMetadata, write_metadata
from distillery.predictor import Predictor
from distillery.variants import compare_variant, module_memory_bytes
from domain.config import Settings
from tests.factories import qnli_like_frame, save_tiny_bert


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_tiny_bert(tmp_path_factory.mktemp("bundle"), layers=2, hidden=32)
    write_metadata(
        folder,
        BundleMetadata(
            problem_type="binary",
            labels=["entailment", "not_entailment"],
            text_columns=["question", "sentence"],
        ),
    )
    return folder


def counting(events: Counter[str]) -> Callable[[str], None]:
    return lambda event: events.update([event])


def test_concurrent_first_requests_load_the_model_once(bundle: Path) -> None:
    events: Counter[str] = Counter()
    located = Counter[str]()
    cache = PredictorCache(4, on_event=counting(events))
    start = threading.Barrier(8)
    loaded = []

    def locate() -> Path:
        located.update(["mdl_a"])
        return bundle

    def first_request() -> None:
        start.wait()
        loaded.append(cache.get("mdl_a", locate))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 8 and all(served is loaded[0] for served in loaded)
    assert located["mdl_a"] == 1 and events["load"] == 1
    assert cache.state("mdl_a") == ("ready", None)
    cache.close()


def test_least_recently_used_model_is_evicted_by_count(bundle: Path) -> None:
    events: Counter[str] = Counter()
    cache = PredictorCache(2, on_event=counting(events))
    for model_id in ("mdl_a", "mdl_b"):
        cache.get(model_id, lambda: bundle)
    assert cache.lookup("mdl_a") is not None  # a is now more recent than b
    cache.get("mdl_c", lambda: bundle)
    assert cache.state("mdl_b") == ("not_loaded", None)
    assert {s.model_id for s in cache.loaded()} == {"mdl_a", "mdl_c"}
    assert events["load"] == 3 and events["evict"] == 1 and events["hit"] == 1
    cache.close()


def test_memory_budget_evicts_even_under_the_count_limit(bundle: Path) -> None:
    one_model = module_memory_bytes(Predictor(bundle).model)
    cache = PredictorCache(10, max_bytes=int(one_model * 1.5))
    cache.get("mdl_a", lambda: bundle)
    cache.get("mdl_b", lambda: bundle)
    assert [s.model_id for s in cache.loaded()] == ["mdl_b"]
    # A model bigger than the whole budget is still served rather than refused.
    tiny = PredictorCache(10, max_bytes=1)
    assert tiny.get("mdl_a", lambda: bundle).model_id == "mdl_a"
    cache.close()
    tiny.close()


def test_a_failed_load_says_why_and_can_be_retried(bundle: Path, tmp_path: Path) -> None:
    cache = PredictorCache(2)
    with pytest.raises(Exception, match=r"distillery\.json"):
        cache.get("mdl_a", lambda: tmp_path)
    state, detail = cache.state("mdl_a")
    assert state == "failed" and detail is not None and "distillery.json" in detail
    cache.get("mdl_a", lambda: bundle)
    assert cache.state("mdl_a") == ("ready", None)
    cache.evict("mdl_a")
    assert cache.state("mdl_a") == ("not_loaded", None)
    cache.close()


def test_int8_variant_is_loaded_apart_and_agrees_with_float(bundle: Path) -> None:
    cache = PredictorCache(4)
    float_model = cache.get("mdl_a", lambda: bundle)
    int8_model = cache.get("mdl_a", lambda: bundle, variant="int8")
    assert float_model is not int8_model
    modules = list(int8_model.predictor.model.modules())
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules)
    assert not any(type(m) is torch.nn.Linear for m in modules), "a linear layer stayed float"
    assert int8_model.memory_bytes < float_model.memory_bytes
    rows = [{"question": "what is the river ?", "sentence": "the river flows ."}] * 3
    float_out = float_model.forward([float_model.encode(rows)])[0]
    int8_out = int8_model.forward([int8_model.encode(rows)])[0]
    assert float_out.shape == int8_out.shape == (3, 2)
    assert np.abs(float_out - int8_out).max() < 0.1
    cache.close()


def test_variant_comparison_reports_the_accuracy_drop(bundle: Path) -> None:
    frame: pd.DataFrame = qnli_like_frame(60)
    comparison = compare_variant(Predictor(bundle), "int8", frame, "label")
    assert comparison["rows"] == 60
    assert 0.0 <= comparison["agreement"] <= 1.0
    expected = 100 * (comparison["float"]["accuracy"] - comparison["variant"]["accuracy"])
    assert comparison["accuracy_drop_points"] == pytest.approx(expected, abs=1e-3)


def test_the_api_process_takes_the_gil_switch_interval_it_is_given(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    try:
        make_predictor_cache(Settings(home=tmp_path, gil_switch_interval_ms=0.25)).close()
        assert sys.getswitchinterval() == pytest.approx(0.00025)
        # 0 leaves Python's interval as it is.
        make_predictor_cache(Settings(home=tmp_path, gil_switch_interval_ms=0)).close()
        assert sys.getswitchinterval() == pytest.approx(0.00025)
    finally:
        sys.setswitchinterval(before)
