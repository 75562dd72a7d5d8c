"""Inflating is bounded: by its output limit, and in steps that leave the event loop free."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from proxy.http.inflate import STEP, InflatedTooLarge, InflateError, inflate

MiB = 1024 * 1024


async def test_inflate_returns_the_body_within_its_limit() -> None:
    body = b'{"a": 1}' * 10_000
    assert await inflate(gzip.compress(body), len(body)) == body
    assert await inflate(zlib.compress(body), len(body)) == body


async def test_a_bomb_stops_at_the_limit_and_the_loop_keeps_turning() -> None:
    bomb = gzip.compress(b"\0" * (64 * MiB), compresslevel=9)
    turns = 0

    async def other_requests() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_requests())
    with pytest.raises(InflatedTooLarge):
        await inflate(bomb, 8 * MiB)
    ticker.cancel()
    # One turn for other work per step of at most STEP bytes, and no more steps than the
    # limit needs: the bomb's other 56 MiB were never inflated.
    assert 8 * MiB // STEP <= turns <= 8 * MiB // STEP + 2


@pytest.mark.parametrize(
    "data",
    [b"\x1f\x8b\x08\x00not gzip", gzip.compress(b"cut short")[:-6], gzip.compress(b"a") + b"x"],
    ids=["garbage", "truncated", "trailing data"],
)
async def test_invalid_data_is_an_inflate_error(data: bytes) -> None:
    with pytest.raises(InflateError):
        await inflate(data, MiB)
