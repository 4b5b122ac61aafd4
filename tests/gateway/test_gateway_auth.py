"""gateway.auth: bearer keys, compared in constant time against every configured key."""

from __future__ import annotations

import hmac

import pytest

from gateway.auth import check_key, key_matches
from gateway.errors import GatewayError


def test_no_configured_keys_means_no_authentication():
    check_key(None, ())
    check_key("Bearer anything", ())


@pytest.mark.parametrize(("header", "message"), [(None, "missing API key"), ("", "missing API key"),
                                                 ("Basic a2V5", "missing API key"), ("Bearer wrong", "invalid API key"),
                                                 ("Bearer key-1x", "invalid API key")])
def test_missing_or_wrong_keys_are_401_in_openai_shape(header, message):
    with pytest.raises(GatewayError) as error:
        check_key(header, ("key-1", "key-2"))
    assert error.value.status == 401 and message in error.value.message
    assert error.value.body()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("header", ["Bearer key-1", "bearer key-2", "Bearer  key-2 "])
def test_any_configured_key_is_accepted(header):
    check_key(header, ("key-1", "key-2"))


def test_every_key_is_compared_with_compare_digest_even_after_a_match(monkeypatch):
    calls, compare = [], hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("gateway.auth.hmac.compare_digest", counting)
    assert key_matches("k1", ("k1", "k2", "k3"))
    assert len(calls) == 3
    assert not key_matches("k4", ("k1", "k2", "k3"))
