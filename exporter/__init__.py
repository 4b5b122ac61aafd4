"""emb-provider exporter: plan -> export -> quantize -> verify -> Triton repository -> serve."""

__version__ = "0.1.0"
