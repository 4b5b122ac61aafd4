"""The precision guide's import path: ``from emb_model_provider.core.config import Config``.

A thin re-export; the implementation lives in :mod:`exporter.config`.
"""

from exporter.config import Config, ConfigError

__all__ = ["Config", "ConfigError"]
