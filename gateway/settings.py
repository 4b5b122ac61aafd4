"""The gateway's configuration: one frozen value built from command-line flags over environment variables over
defaults, checked once at start so a bad value fails with a message naming it instead of surfacing per request.

Only this module reads the environment (besides the client's own ``EMB_PROVIDER_TRITON_URL`` fallback, which the
gateway resolves here too so that the effective URL is logged and validated).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client import ENV_URL
from client._common import split_urls

ENV_PREFIX = "EMB_PROVIDER_GATEWAY_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_API_KEY_ENV = "EMB_PROVIDER_API_KEYS"


class SettingsError(ValueError):
    """A flag or environment value the gateway cannot start with; the message names it and what is allowed."""


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway serves and how much it accepts.

    ``timeout`` bounds one ``/v1/embeddings`` request end to end (all its Triton batches); past it the client gets
    504 with ``Retry-After``. ``max_in_flight`` requests are served at once; one more gets 429 at once rather than
    waiting in a queue that could grow without bound. ``api_keys`` are the accepted bearer tokens (empty: no auth).
    """

    triton_url: str = "localhost:8000"
    host: str = "127.0.0.1"
    port: int = 8080
    api_key_env: str = DEFAULT_API_KEY_ENV
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # secrets: never printed
    max_body_bytes: int = 2 * 1024 * 1024
    max_texts: int = 2048  # OpenAI's own limit on inputs per request
    max_in_flight: int = 32
    timeout: float = 30.0
    retry_after: int = 1  # seconds, sent with 503/504/429 so SDKs back off before retrying
    cors_origins: tuple[str, ...] = ()
    metrics: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        try:
            split_urls(self.triton_url)
        except ValueError:
            raise SettingsError(f"triton URL {self.triton_url!r}: expected host:port or http(s)://host:port, "
                                f"several separated by commas (--triton-url or {ENV_URL})") from None
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise SettingsError(f"port {self.port!r}: allowed 0-65535")
        for name in ("max_body_bytes", "max_texts", "max_in_flight", "retry_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name.replace('_', '-')}={value!r}: expected an integer >= 1")
        if not isinstance(self.timeout, (int, float)) or isinstance(self.timeout, bool) or self.timeout <= 0:
            raise SettingsError(f"timeout={self.timeout!r}: expected seconds > 0")
        if any(not key or key != key.strip() for key in self.api_keys):
            raise SettingsError(f"${self.api_key_env} holds an empty key or one with surrounding spaces: give "
                                "non-empty keys separated by commas")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log level {self.log_level!r}: allowed {', '.join(LOG_LEVELS)}")

    @property
    def exposed(self) -> bool:
        """Whether the bind address reaches beyond this host (anything but a loopback address or name)."""
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True  # a hostname or interface name: assume it is reachable

    @classmethod
    def resolve(cls, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> GatewaySettings:
        """Flags (None = not given) over ``EMB_PROVIDER_GATEWAY_<NAME>`` over the defaults; the keys are read from
        the variable that ``api_key_env`` names (comma-separated)."""
        env = os.environ if env is None else env
        defaults = cls()
        values: dict[str, Any] = {}
        for name, kind in _FIELDS.items():
            given = flags.get(name)
            if given is None:
                raw = env.get(_variable(name))
                given = None if raw in (None, "") else parse(name, kind, raw)
            values[name] = getattr(defaults, name) if given is None else given
        raw_keys = env.get(values["api_key_env"], "")
        values["api_keys"] = tuple(k.strip() for k in raw_keys.split(",")) if raw_keys.strip() else ()
        return cls(**values)


# Settable by flag or environment, with the type each raw string is parsed to. api_keys is not: keys only ever come
# from the variable api_key_env names, so they never appear in a process listing.
_FIELDS: dict[str, type] = {"triton_url": str, "host": str, "port": int, "api_key_env": str,
                            "max_body_bytes": int, "max_texts": int, "max_in_flight": int, "timeout": float,
                            "retry_after": int, "cors_origins": tuple, "metrics": bool, "log_level": str}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _variable(name: str) -> str:
    """The environment variable of setting ``name``."""
    return ENV_URL if name == "triton_url" else ENV_PREFIX + name.upper()


def parse(name: str, kind: type, raw: str) -> Any:
    """A raw string (from the environment, or a flag given as text) as the setting's ``kind``."""
    try:
        if kind is bool:
            if raw.strip().lower() not in _TRUE | _FALSE:
                raise ValueError(raw)
            return raw.strip().lower() in _TRUE
        if kind is tuple:
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return kind(raw.strip())
    except ValueError:
        allowed = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, "a string")
        raise SettingsError(f"{_variable(name)}={raw!r}: expected {allowed}") from None
