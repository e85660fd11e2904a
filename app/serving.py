"""Loaded models for predict: a bounded LRU cache of warmed-up predictors, each with its batcher.

The cache is bounded by count and by memory (parameter and buffer bytes), evicts the least
recently used model first, loads each (model, variant) once however many requests ask for it at
the same moment, and runs one dummy row through every model it loads so the first real request
does not pay for lazy initialisation. Each loaded model owns a `MicroBatcher`; all batchers share
one small inference thread pool, because on a CPU two forward passes at once only fight over the
same cores.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch
from fastapi import FastAPI, Request
from sqlalchemy.orm import Session

from app.batching import MicroBatcher
from distillery.encoding import EncodedRow
from distillery.predictor import Predictor
from distillery.scripted import ScriptedClassifier, script_predictor
from distillery.variants import FLOAT, INT8, apply_variant, module_memory_bytes
from domain.config import Settings
from domain.orm import Model
from domain.storage import ArtifactStore

log = logging.getLogger("distillery.serving")

LoadState = Literal["ready", "loading", "failed", "not_loaded"]
# One request's rows, reduced to the model's text columns (validated, then encoded, before
# they are queued).
RequestRows = list[dict[str, str]]


def pick_serving_device(wanted: str) -> str:
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


@dataclass(frozen=True)
class BatchingPolicy:
    max_batch_rows: int = 32
    max_wait_ms: float = 5.0
    max_queue_rows: int = 2048
    # Rows per forward call within a merged batch (0: 8 on CPU, the whole batch on CUDA).
    chunk_rows: int = 0

    def forward_rows(self, device: str) -> int:
        if self.chunk_rows > 0:
            return self.chunk_rows
        # On a CPU, padding 32 rows of mixed length to the longest costs more than the extra
        # calls of length-sorted chunks; a GPU wants the whole batch in one call.
        return self.max_batch_rows if device.startswith("cuda") else min(8, self.max_batch_rows)


def longest_row(rows: list[EncodedRow]) -> int:
    """A request's token length, the order its batch is run in (so each chunk pads little)."""
    return max((len(row["input_ids"]) for row in rows), default=0)


@dataclass
class ServedModel:
    """A loaded, warmed-up model variant and the batcher that feeds it."""

    model_id: str
    variant: str
    predictor: Predictor
    memory_bytes: int
    load_seconds: float
    batcher: MicroBatcher[list[EncodedRow], np.ndarray] = field(init=False, repr=False)

    @property
    def scripted(self) -> bool:
        """Whether the torch model runs as TorchScript (distillery/scripted.py), not eagerly."""
        return isinstance(self.predictor.model, ScriptedClassifier)

    def encode(self, rows: RequestRows) -> list[EncodedRow]:
        """One request's rows as token ids: done before they queue, off the inference thread."""
        return self.predictor.encode_records(rows)

    def forward(self, requests: list[list[EncodedRow]]) -> list[np.ndarray]:
        """Raw outputs for each request's rows, from one forward pass over all of them."""
        outputs = self.predictor.forward([row for request in requests for row in request])
        bounds = np.cumsum([len(request) for request in requests])[:-1]
        return list(np.split(outputs, bounds))


Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class TtlCache(Generic[Key, Value]):
    """A small thread-safe map whose entries expire `ttl_seconds` after they were put, holding
    at most `max_entries` (the oldest put goes first). `ttl_seconds` 0 keeps nothing."""

    def __init__(self, ttl_seconds: float, max_entries: int = 4096) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, tuple[float, Value]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Value | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: Key, value: Value) -> None:
        if self.ttl_seconds <= 0:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (time.monotonic() + self.ttl_seconds, value)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, matches: Callable[[Key], bool]) -> None:
        with self._lock:
            for key in [k for k in self._entries if matches(k)]:
                del self._entries[key]


@dataclass(frozen=True)
class ServingContext:
    """What predict needs from app.state, as one dependency."""

    cache: PredictorCache
    store: ArtifactStore
    settings: Settings
    session_factory: Callable[[], Session]


async def serving_context(request: Request) -> ServingContext:
    # Async on purpose: FastAPI runs a plain `def` dependency in the thread pool, and on the
    # predict hot path every such hop costs more than the lookup itself.
    state = request.app.state
    return ServingContext(state.predictors, state.store, state.settings, state.session_factory)


def make_predictor_cache(settings: Settings) -> PredictorCache:
    if settings.inference_torch_threads > 0:
        torch.set_num_threads(settings.inference_torch_threads)
    if settings.gil_switch_interval_ms > 0:
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    return PredictorCache(
        settings.model_cache_size,
        max_bytes=settings.model_cache_max_bytes,
        device=settings.serving_device,
        policy=BatchingPolicy(
            max_batch_rows=settings.predict_max_batch_rows,
            max_wait_ms=settings.predict_max_wait_ms,
            max_queue_rows=settings.predict_max_queue_rows,
            chunk_rows=settings.predict_chunk_rows,
        ),
        inference_threads=settings.inference_threads,
        lookup_ttl_seconds=settings.predict_lookup_ttl_seconds,
        torchscript=settings.serving_torchscript,
    )


class PredictorCache:
    """Loaded (model, variant) pairs, bounded by `capacity` models and `max_bytes` of weights."""

    def __init__(
        self,
        capacity: int,
        *,
        max_bytes: int | None = None,
        device: str = "cpu",
        policy: BatchingPolicy | None = None,
        inference_threads: int = 1,
        on_batch: Callable[[int], None] | None = None,
        on_event: Callable[[str], None] | None = None,
        lookup_ttl_seconds: float = 0.0,
        torchscript: bool = False,
    ) -> None:
        self.capacity = max(1, capacity)
        self.torchscript = torchscript
        self.max_bytes = max_bytes
        self.device = pick_serving_device(device)
        self.policy = policy or BatchingPolicy()
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, inference_threads), thread_name_prefix="inference"
        )
        self.on_batch = on_batch
        # "hit", "load", "evict": counted by the metrics, if any.
        self.on_event = on_event or (lambda event: None)
        self._served: OrderedDict[tuple[str, str], ServedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._failures: dict[tuple[str, str], str] = {}
        # What predict read from the database about a model, by (model id, variant asked for,
        # key id), kept briefly: see DISTILLERY_PREDICT_LOOKUP_TTL_SECONDS.
        self.lookups: TtlCache[tuple[str, str | None, str | None], Any] = TtlCache(
            lookup_ttl_seconds
        )

    def lookup(self, model_id: str, variant: str = "float") -> ServedModel | None:
        """The loaded model, marked most recently used; never blocks on a load."""
        key = (model_id, variant)
        with self._lock:
            served = self._served.get(key)
            if served is not None:
                self._served.move_to_end(key)
                self.on_event("hit")
            return served

    def get(self, model_id: str, locate: Callable[[], Path], variant: str = "float") -> ServedModel:
        """The loaded model, loading it first if needed from the folder `locate()` gives
        (blocking: call from a thread). `locate` runs only on a load."""
        served = self.lookup(model_id, variant)
        if served is not None:
            return served
        key = (model_id, variant)
        with self._lock:
            load_lock = self._loading.setdefault(key, threading.Lock())
        # One loader per key; concurrent first requests wait here instead of loading it again.
        with load_lock:
            served = self.lookup(model_id, variant)
            if served is not None:
                return served
            try:
                served = self._load(model_id, variant, locate())
            except Exception as exc:
                with self._lock:
                    self._failures[key] = str(exc)
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._served[key] = served
                self._failures.pop(key, None)
                self._loading.pop(key, None)
                self._evict_over_budget(keep=key)
            return served

    def state(self, model_id: str, variant: str = "float") -> tuple[LoadState, str | None]:
        """Readiness of one (model, variant): loaded, being loaded, failed (with why), or not."""
        key = (model_id, variant)
        with self._lock:
            if key in self._served:
                return "ready", None
            if key in self._loading:
                return "loading", None
            if key in self._failures:
                return "failed", self._failures[key]
            return "not_loaded", None

    def loaded(self) -> list[ServedModel]:
        with self._lock:
            return list(self._served.values())

    def evict(self, model_id: str) -> None:
        """Forget every loaded variant of a model (it was deleted or changed)."""
        self.lookups.discard(lambda key: key[0] == model_id)
        with self._lock:
            for key in [k for k in self._served if k[0] == model_id]:
                del self._served[key]
                self.on_event("evict")
            for key in [k for k in self._failures if k[0] == model_id]:
                del self._failures[key]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _evict_over_budget(self, keep: tuple[str, str]) -> None:
        def over_budget() -> bool:
            if len(self._served) > self.capacity:
                return True
            used = sum(s.memory_bytes for s in self._served.values())
            return self.max_bytes is not None and used > self.max_bytes

        # The model just loaded stays even if it alone is over the memory budget.
        while over_budget() and len(self._served) > 1:
            oldest = next(k for k in self._served if k != keep)
            del self._served[oldest]
            self.on_event("evict")
            log.info("evicted model %s (%s) from the serving cache", *oldest)

    def _load(self, model_id: str, variant: str, folder: Path) -> ServedModel:
        started = time.perf_counter()
        predictor = Predictor(
            folder, device=self.device, batch_size=self.policy.forward_rows(self.device)
        )
        apply_variant(predictor, variant)
        # Counted before tracing: a frozen module holds its weights as constants, not state.
        memory_bytes = module_memory_bytes(predictor.model)
        if self.torchscript and self.device == "cpu" and variant in (FLOAT, INT8):
            script_predictor(predictor)
        served = ServedModel(
            model_id=model_id,
            variant=variant,
            predictor=predictor,
            memory_bytes=memory_bytes,
            load_seconds=0.0,
        )
        served.batcher = MicroBatcher(
            served.forward,
            executor=self.executor,
            max_batch_size=self.policy.max_batch_rows,
            max_wait_ms=self.policy.max_wait_ms,
            max_queue_rows=self.policy.max_queue_rows,
            rows_of=len,
            chunk_rows=self.policy.forward_rows(self.device),
            sort_key=longest_row,
            on_batch=self.on_batch,
        )
        # Warm-up: the first forward pass pays for lazy kernels and allocator growth.
        served.forward([served.encode([dict.fromkeys(predictor.metadata.text_columns, "warm up")])])
        served.load_seconds = time.perf_counter() - started
        self.on_event("load")
        log.info(
            "loaded model %s (%s%s) on %s in %.2f s, %d MB",
            model_id,
            variant,
            ", TorchScript" if served.scripted else "",
            self.device,
            served.load_seconds,
            served.memory_bytes // 2**20,
        )
        return served


def preload(
    cache: PredictorCache,
    store: ArtifactStore,
    session_factory: Callable[[], Session],
    names: list[str],
) -> None:
    """Load and warm up the models named at startup ("mdl_..." or "mdl_...:int8"), one after
    another; one that cannot be loaded is logged and its readiness says why."""
    for name in names:
        model_id, _, variant = name.partition(":")
        with session_factory() as session:
            model = session.get(Model, model_id)
            storage_key = model.storage_key if model and model.deleted_at is None else None
        if storage_key is None:
            log.error("cannot preload %s: no such model", model_id)
            continue
        try:
            cache.get(model_id, partial(store.local_folder, storage_key), variant or "float")
        except Exception:
            log.exception("could not preload model %s (%s)", model_id, variant or "float")


@asynccontextmanager
async def serving_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Preload in the background (readiness says "loading" meanwhile). The inference pool is
    left running at exit: an idle pool costs nothing, and the app may be started again."""
    cache: PredictorCache = app.state.predictors
    names = app.state.settings.preload_models
    preloading = None
    if names:
        preloading = asyncio.create_task(
            asyncio.to_thread(
                preload, cache, app.state.store, app.state.session_factory, list(names)
            )
        )
    try:
        yield
    finally:
        if preloading is not None:
            preloading.cancel()
