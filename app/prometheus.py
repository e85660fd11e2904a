"""`GET /metrics` in Prometheus text format: HTTP traffic, batching, queue depth, model cache.

Each app gets its own registry (tests build many apps in one process). Request counts and
latencies are labelled by route template (`/v1/models/{model_id}/predict`), never by raw path,
so a scraper sees a fixed, small set of series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.serving import PredictorCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """The service's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "distillery_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "distillery_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "distillery_predict_batch_rows",
            "Rows in each forward pass the micro-batcher ran",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.predict_rejected = Counter(
            "distillery_predict_rejected",
            "Predict requests refused: queue_full (429) or timeout (503)",
            ["reason"],
            registry=self.registry,
        )
        self.cache_events = Counter(
            "distillery_model_cache",
            "Model cache events: hit, load, evict",
            ["event"],
            registry=self.registry,
        )

    def watch(self, cache: PredictorCache) -> None:
        self.registry.register(CacheCollector(cache))

    def cache_event(self, event: str) -> None:
        self.cache_events.labels(event=event).inc()

    def observe_batch(self, rows: int) -> None:
        self.batch_rows.observe(rows)


class CacheCollector(Collector):
    """Read at scrape time: queue depth per loaded model, models and bytes held."""

    def __init__(self, cache: PredictorCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        served = self.cache.loaded()
        queue = GaugeMetricFamily(
            "distillery_predict_queue_rows",
            "Rows waiting for a forward pass, per loaded model and variant",
            labels=["model", "variant"],
        )
        for entry in served:
            queue.add_metric([entry.model_id, entry.variant], entry.batcher.queued_rows)
        yield queue
        yield GaugeMetricFamily(
            "distillery_models_loaded", "Model variants held by the cache", value=len(served)
        )
        yield GaugeMetricFamily(
            "distillery_model_cache_bytes",
            "Bytes of weights held by the cache",
            value=sum(entry.memory_bytes for entry in served),
        )


class MetricsMiddleware:
    """Counts and times every HTTP request by the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            # The router writes the matched route into the scope it was given.
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = {"route": template, "method": scope["method"], "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI) -> ServingMetrics:
    """Count every request, watch the model cache in app.state.predictors, serve /metrics."""
    metrics = ServingMetrics()
    cache: PredictorCache = app.state.predictors
    cache.on_batch = metrics.observe_batch
    cache.on_event = metrics.cache_event
    metrics.watch(cache)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
    return metrics


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    operation_id="metrics",
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
def read_metrics(request: Request) -> Response:
    """Request counts and latency histograms by route and status, batch sizes, queue depth,
    model cache hits, loads and evictions, in Prometheus text format."""
    metrics: ServingMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
