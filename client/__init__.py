"""Thin Python client for emb-provider models served by Triton: texts in, float32 vectors (and token counts) out.

Depends only on numpy and tritonclient[http] (the base ``pip install``), never on torch or the exporter. Without
tritonclient, importing this package raises a ModuleNotFoundError that names the missing module and the fix
(``pip install "tritonclient[http]"``).
"""

from ._async import AsyncEmbeddingClient
from ._common import ENV_MODEL, ENV_URL, Embeddings, ModelInfo, Retry, Timeouts
from ._sync import EmbeddingClient
from .errors import EmbeddingError, InvalidInput, ModelNotFound, ServerError, ServerUnavailable

__all__ = [
    "ENV_MODEL",
    "ENV_URL",
    "AsyncEmbeddingClient",
    "EmbeddingClient",
    "EmbeddingError",
    "Embeddings",
    "InvalidInput",
    "ModelInfo",
    "ModelNotFound",
    "Retry",
    "ServerError",
    "ServerUnavailable",
    "Timeouts",
]
