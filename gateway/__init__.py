"""emb-provider's OpenAI-compatible embeddings API in front of Triton: ``python -m gateway --triton-url HOST:PORT``.

Modules by concern: :mod:`gateway.settings` (flags + environment, validated), :mod:`gateway.auth` (API keys),
:mod:`gateway.limits` (body size, texts, requests in flight), :mod:`gateway.errors` (OpenAI's error shape and the
status of each failure), :mod:`gateway.schemas` (request and response format), :mod:`gateway.metrics`
(Prometheus), :mod:`gateway.app` (the routes), :mod:`gateway.process` (run it as a child process).
Needs the ``gateway`` extra: ``pip install 'emb-provider[gateway]'``.
"""
