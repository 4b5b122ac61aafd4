"""Configuration from the environment (the precision guide's variables), validated into one value object.

Nothing below this module reads the environment: the resolved :class:`Config` (and the plan built from it) is
passed down explicitly. Every invalid value raises :class:`ConfigError` naming the variable, the value and what is
allowed, so a typo never silently becomes a default.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["Config", "ConfigError", "configure_logging", "parse_bool", "parse_overrides", "parse_precision"]
from .precisions import NAMES, QUANTIZATION_METHODS

PREFIX = "EMB_PROVIDER_"
PRECISION_CHOICES: tuple[str, ...] = ("auto",) + NAMES
QUANTIZATION_CHOICES: tuple[str, ...] = tuple(sorted(QUANTIZATION_METHODS))
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _choice(var: str, raw: str, allowed: tuple[str, ...], *, upper: bool = False) -> str:
    value = raw.strip().upper() if upper else raw.strip().lower()
    if value not in allowed:
        raise ConfigError(f"{var}={raw!r} is not valid; allowed: {', '.join(allowed)}")
    return value


def parse_bool(var: str, raw: str) -> bool:
    """Parse a boolean the way operators write them (true/false/1/0/yes/no/on/off, any case)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{var}={raw!r} is not a boolean; allowed: true/false, 1/0, yes/no, on/off (any case)")


def parse_precision(var: str, raw: str) -> str:
    """Validate one precision value (``auto`` included)."""
    return _choice(var, raw, PRECISION_CHOICES)


def parse_overrides(var: str, raw: str) -> dict[str, str]:
    """Parse the JSON object ``{model-or-name-or-group: precision}``."""
    text = raw.strip() or "{}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{var} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}, char {exc.pos}): {raw!r}; "
            'expected a JSON object such as {"sentence-transformers/all-MiniLM-L6-v2": "fp16"}'
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{var} must be a JSON object of model -> precision, got {type(data).__name__}: {raw!r}")
    overrides: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(f"{var}: value for {key!r} must be a string precision, got {value!r}; "
                              f"allowed: {', '.join(PRECISION_CHOICES)}")
        if not key.strip():
            raise ConfigError(f"{var}: empty model key is not allowed")
        overrides[key] = parse_precision(f"{var}[{key!r}]", value)
    return overrides


@dataclass(frozen=True)
class Config:
    """Validated settings for one run. Attribute names follow the precision guide."""

    model_precision: str = "auto"
    enable_quantization: bool = False
    quantization_method: str = "int8"
    enable_gpu_memory_optimization: bool = False
    model_precision_overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    log_level: str = "INFO"
    device: str = "auto"
    explicit: frozenset[str] = frozenset()
    """Names of the variables that were set (not defaulted): 'explicitly false' differs from 'unset'."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_precision_overrides", MappingProxyType(dict(self.model_precision_overrides)))
        self._check_quantization_consistency()

    def _check_quantization_consistency(self) -> None:
        if "ENABLE_QUANTIZATION" not in self.explicit or self.enable_quantization:
            return
        asked = ([f"{PREFIX}MODEL_PRECISION={self.model_precision}"]
                 if self.model_precision in QUANTIZATION_METHODS else [])
        asked += [f"{PREFIX}MODEL_PRECISION_OVERRIDES[{k!r}]={v}"
                  for k, v in self.model_precision_overrides.items() if v in QUANTIZATION_METHODS]
        if asked:
            raise ConfigError(
                f"{PREFIX}ENABLE_QUANTIZATION=false contradicts {', '.join(asked)}: "
                f"set {PREFIX}ENABLE_QUANTIZATION=true (or leave it unset) or choose a non-quantized precision"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Config":
        """Read and validate the ``EMB_PROVIDER_*`` variables (``os.environ`` when ``env`` is None)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        explicit: set[str] = set()
        parsers = {
            "MODEL_PRECISION": ("model_precision", parse_precision),
            "ENABLE_QUANTIZATION": ("enable_quantization", parse_bool),
            "QUANTIZATION_METHOD": ("quantization_method",
                                    lambda var, raw: _choice(var, raw, QUANTIZATION_CHOICES)),
            "ENABLE_GPU_MEMORY_OPTIMIZATION": ("enable_gpu_memory_optimization", parse_bool),
            "MODEL_PRECISION_OVERRIDES": ("model_precision_overrides", parse_overrides),
            "LOG_LEVEL": ("log_level", lambda var, raw: _choice(var, raw, LOG_LEVELS, upper=True)),
            "DEVICE": ("device", _parse_device_setting),
        }
        for suffix, (attr, parse) in parsers.items():
            var = PREFIX + suffix
            raw = env.get(var)
            if raw is None or not raw.strip():
                continue
            values[attr] = parse(var, raw)
            explicit.add(suffix)
        return cls(**values, explicit=frozenset(explicit))

    def with_overrides(self, **changes: Any) -> "Config":
        """A copy with CLI flags applied (flags beat the environment for one run); None values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        explicit = set(self.explicit) | {k.upper() for k in changes}
        return replace(self, **changes, explicit=frozenset(explicit))

    def configure_logging(self) -> None:
        """Route the ``exporter`` loggers to stderr at the configured level."""
        configure_logging(self.log_level)


def _parse_device_setting(var: str, raw: str) -> str:
    from .devices import parse_device  # late import: devices imports nothing from here at module load

    value = raw.strip().lower()
    if value == "auto":
        return value
    parse_device(value, source=var)
    return value


def configure_logging(level: str) -> None:
    """Attach one stderr handler to the ``exporter`` logger tree (idempotent)."""
    logger = logging.getLogger("exporter")
    logger.setLevel(level)
    if not any(getattr(h, "_emb_provider", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._emb_provider = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
