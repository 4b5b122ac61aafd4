"""gateway.metrics: Prometheus text with requests by route/model/status, latency, texts and tokens."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def test_counts_and_latency_per_app():
    metrics, other = Metrics(), Metrics()
    metrics.observe("/v1/embeddings", "m", 200, 0.003)
    metrics.observe("/v1/embeddings", "-", 401, 0.001)
    metrics.embedded("m", 3, 21)
    got = samples(metrics)
    assert got[("gateway_requests_total", (("model", "m"), ("route", "/v1/embeddings"), ("status", "200")))] == 1
    assert got[("gateway_requests_total", (("model", "-"), ("route", "/v1/embeddings"), ("status", "401")))] == 1
    assert got[("gateway_request_duration_seconds_count", (("route", "/v1/embeddings"),))] == 2
    assert got[("gateway_request_duration_seconds_bucket", (("le", "0.005"), ("route", "/v1/embeddings")))] == 2
    assert got[("gateway_texts_embedded_total", (("model", "m"),))] == 3
    assert got[("gateway_tokens_embedded_total", (("model", "m"),))] == 21
    assert not any(name == "gateway_requests_total" for name, _ in samples(other))  # registries are separate
