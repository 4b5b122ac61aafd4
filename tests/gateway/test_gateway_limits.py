"""gateway.limits: in-flight requests refused with 429 at once, bodies and text counts over the limits with 413."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import GatewayError
from gateway.limits import InFlight, check_texts, read_body


def test_in_flight_refuses_at_once_when_full_and_frees_on_exit():
    limit = InFlight(2, retry_after=3)
    with limit, limit:
        with pytest.raises(GatewayError) as error:
            limit.__enter__()
        assert error.value.status == 429 and error.value.retry_after == 3
    assert limit.active == 0
    with pytest.raises(RuntimeError), limit:
        raise RuntimeError("a failed request frees its slot too")
    assert limit.active == 0


async def chunks(*parts: bytes):
    for part in parts:
        yield part


def read(content_length, parts, limit):
    return asyncio.run(read_body(content_length, chunks(*parts), limit))


def test_body_within_the_limit_is_read_whole():
    assert read("6", [b"abc", b"def"], 6) == b"abcdef"
    assert read(None, [b"abc", b"def"], 6) == b"abcdef"


def test_declared_length_over_the_limit_is_refused_before_reading():
    async def never():
        raise AssertionError("read although Content-Length was over the limit")
        yield b""

    with pytest.raises(GatewayError) as error:
        asyncio.run(read_body("7", never(), 6))
    assert error.value.status == 413 and "7 bytes; at most 6" in error.value.message


def test_chunked_body_over_the_limit_is_refused_while_reading():
    with pytest.raises(GatewayError) as error:
        read(None, [b"abcd", b"efgh"], 6)
    assert error.value.status == 413 and "over 8 bytes" in error.value.message
    with pytest.raises(GatewayError) as error:
        read("ten", [b""], 6)
    assert error.value.status == 400


def test_text_count_over_the_limit_is_413_naming_both_numbers():
    check_texts(5, 5)
    with pytest.raises(GatewayError) as error:
        check_texts(6, 5)
    assert error.value.status == 413 and error.value.param == "input"
    assert "6 texts" in error.value.message and "at most 5" in error.value.message
