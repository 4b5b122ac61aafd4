"""The client's exception tree: callers catch ``EmbeddingError`` or one precise subclass.

Every error keeps the server's own words in ``server_message`` (None for client-side checks), so an application can
log what Triton said without parsing our message.
"""

from __future__ import annotations

from collections.abc import Sequence


class EmbeddingError(Exception):
    """Base class of every error the embedding client raises."""

    def __init__(self, message: str, *, server_message: str | None = None):
        super().__init__(message)
        self.server_message = server_message


class ServerUnavailable(EmbeddingError):
    """The server could not be reached or answered 503/UNAVAILABLE, also after the configured retries."""


class ModelNotFound(EmbeddingError):
    """The requested model is not served (or no single default exists); ``available`` lists the served ones."""

    def __init__(self, message: str, *, model: str | None, available: Sequence[str],
                 server_message: str | None = None):
        shown = ", ".join(available) if available else "none"
        super().__init__(f"{message}; served embedding models: {shown}", server_message=server_message)
        self.model = model
        self.available = list(available)


class InvalidInput(EmbeddingError, ValueError):
    """A text or an option the client or the server rejected: ``index`` is the text's position in the caller's
    input, if known; ``option`` the call option at fault (``"dimensions"``, ``"prompt_name"`` ...), if one is."""

    def __init__(self, message: str, *, index: int | None, reason: str, server_message: str | None = None,
                 option: str | None = None):
        super().__init__(message, server_message=server_message)
        self.index = index
        self.reason = reason
        self.option = option


class ServerError(EmbeddingError):
    """The server failed a request for a reason that retrying will not fix (HTTP 5xx other than 503, or a
    response that does not match the embedding contract)."""

    def __init__(self, message: str, *, status: str | None = None, server_message: str | None = None):
        super().__init__(message, server_message=server_message)
        self.status = status
