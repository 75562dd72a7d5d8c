"""Inflating gzip and deflate bodies in bounded steps.

A few hundred kilobytes of gzip can inflate to gigabytes. Inflating in one call would hold the
event loop (every other request waits) and memory until it was done; here each step yields at
most `STEP` bytes and gives the loop a turn, and inflating stops as soon as the output passes
its limit, so the work done is bounded by the limit, not by what the sender packed.
"""

from __future__ import annotations

import asyncio
import zlib

STEP = 64 * 1024
# zlib's window bits + 32: accept a gzip or a zlib header, whichever the body has.
_AUTO_HEADER = zlib.MAX_WBITS | 32
INFLATABLE = frozenset({"gzip", "x-gzip", "deflate"})


class InflateError(ValueError):
    """The body is not valid gzip or deflate data."""


class InflatedTooLarge(ValueError):
    """The body inflates to more than its limit; what was inflated so far is dropped."""


def inflatable(content_encoding: str) -> bool:
    return content_encoding.strip().lower() in INFLATABLE


async def inflate(data: bytes, limit: int) -> bytes:
    """The inflated body, at most `limit` bytes, or InflatedTooLarge / InflateError."""
    decompressor = zlib.decompressobj(_AUTO_HEADER)
    out = bytearray()
    pending = data
    while pending or not decompressor.eof:
        try:
            chunk = decompressor.decompress(pending, STEP)
        except zlib.error as exc:
            raise InflateError(f"the body is not valid gzip or deflate data: {exc}") from exc
        out += chunk
        if len(out) > limit:
            raise InflatedTooLarge(f"the body inflates to more than {limit} bytes")
        pending = decompressor.unconsumed_tail
        if not chunk and not pending:
            break  # input exhausted before the end of the stream
        await asyncio.sleep(0)
    if not decompressor.eof or decompressor.unused_data:
        raise InflateError("the body is truncated or has data after its end")
    return bytes(out)
