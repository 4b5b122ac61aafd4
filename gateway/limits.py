"""Request limits: body size, texts per request, and requests in flight. Each is refused at once (413 or 429):
nothing waits in a queue that a burst of clients could grow without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .errors import GatewayError, too_large, too_many_requests


class InFlight:
    """At most ``limit`` requests at once; :meth:`enter` beyond that raises 429 instead of waiting.

    A plain counter is enough: the app runs on one event loop, and ``enter``/``exit`` never await.
    """

    def __init__(self, limit: int, retry_after: int):
        self.limit, self.retry_after = limit, retry_after
        self.active = 0

    def __enter__(self) -> InFlight:
        if self.active >= self.limit:
            raise too_many_requests(self.limit, self.retry_after)
        self.active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.active -= 1


async def read_body(content_length: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes: from a declared
    Content-Length before reading anything, else while reading (a chunked body has none)."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise GatewayError(400, f"Content-Length {content_length!r} is not a number") from None
        if declared > limit:
            raise _body_too_large(declared, limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise _body_too_large(len(body), limit, at_least=True)
    return bytes(body)


def check_texts(count: int, limit: int) -> None:
    if count > limit:
        raise too_large(f"{count} texts in one request; at most {limit} are accepted: split the input",
                        param="input")


def _body_too_large(size: int, limit: int, at_least: bool = False) -> GatewayError:
    return too_large(f"request body is {'over ' if at_least else ''}{size} bytes; at most {limit} are accepted")
