"""emb-provider exporter: plan -> export -> quantize -> verify -> Triton repository -> serve."""

from .provenance import versions

__version__ = "0.1.0"

__all__ = ["__version__", "versions"]
