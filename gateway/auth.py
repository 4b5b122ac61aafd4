"""Bearer-token check for the ``/v1`` routes (what the openai SDKs send as ``Authorization: Bearer <api_key>``).

Keys are compared with :func:`hmac.compare_digest` against *every* configured key, without stopping at a match, so
the time taken says nothing about which key (or how much of one) was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from .errors import unauthorized

_SCHEME = "bearer "


def check_key(authorization: str | None, keys: Sequence[str]) -> None:
    """Return when ``authorization`` carries one of ``keys`` (or no keys are configured); else raise 401."""
    if not keys:
        return
    if not authorization or not authorization[:len(_SCHEME)].lower() == _SCHEME:
        raise unauthorized("missing API key: send 'Authorization: Bearer <key>' (the openai SDKs' api_key)")
    if not key_matches(authorization[len(_SCHEME):].strip(), keys):
        raise unauthorized("invalid API key")


def key_matches(given: str, keys: Sequence[str]) -> bool:
    """Constant-time membership: every key is compared, whatever the earlier comparisons gave."""
    candidate = given.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode("utf-8"))
    return matched
