"""Loaded models for the predict endpoint: a small LRU cache, each model loaded once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from distillery.predictor import Predictor


class PredictorCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, model_id: str, folder: Path) -> Predictor:
        with self._lock:
            if model_id in self._predictors:
                self._predictors.move_to_end(model_id)
                return self._predictors[model_id]
            load_lock = self._loading.setdefault(model_id, threading.Lock())
        # One loader per model; other requests for it wait here instead of loading it again.
        with load_lock:
            with self._lock:
                if model_id in self._predictors:
                    return self._predictors[model_id]
            predictor = Predictor(folder)
            with self._lock:
                self._predictors[model_id] = predictor
                while len(self._predictors) > self.capacity:
                    self._predictors.popitem(last=False)
                self._loading.pop(model_id, None)
            return predictor

    def evict(self, model_id: str) -> None:
        """Forget a loaded model (it was deleted)."""
        with self._lock:
            self._predictors.pop(model_id, None)
