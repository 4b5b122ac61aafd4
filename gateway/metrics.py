"""Prometheus metrics of the gateway (``--metrics``: text format on ``/metrics``). Triton's own metrics stay on
Triton's metrics port; these count what the gateway's callers see.

Each app gets its own registry, so several apps in one process (tests) do not collide. The ``model`` label is a
served model's name, or ``-`` when the request never reached one (bad JSON, unknown model, auth, limits): a label
value taken from untrusted input would let any caller create unbounded time series.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

NO_MODEL = "-"
# Seconds: from a single short text (a few ms) to a long batch near the default 30 s timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The gateway's counters and latency histogram, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "Requests by route, model and HTTP status",
                                ("route", "model", "status"), registry=self.registry)
        self.latency = Histogram("gateway_request_duration_seconds", "Time to answer a request, by route",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.texts = Counter("gateway_texts_embedded", "Texts embedded, by model", ("model",),
                             registry=self.registry)
        self.tokens = Counter("gateway_tokens_embedded", "Tokens embedded (the model tokenizer's count), by model",
                              ("model",), registry=self.registry)

    def observe(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def embedded(self, model: str, texts: int, tokens: int) -> None:
        self.texts.labels(model).inc(texts)
        self.tokens.labels(model).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
