"""Reading a client's request: headers checked, the body bounded in size and time, and decoded.

The server hands the app request bodies as they came (`auto_decompress=False` in
`proxy.http.edge`), so a gzip or deflate body is inflated here within the body limit; the
decoded body then travels without its `Content-Encoding`, since the gateway forwards, learns
from and stores the identity bytes. Any other encoding is passed on untouched, header included.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import BadEncoding, BadRequest, PayloadTooLarge, RequestTimeout
from proxy.http.inflate import InflatedTooLarge, InflateError, inflatable, inflate

# Linux's `struct tcp_info`: `tcpi_last_data_recv` (ms since the socket last received data) is
# the 14th 32-bit field, after 8 one-byte fields; stable ABI since Linux 2.6.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCP_INFO_SIZE = 56
_LAST_DATA_RECV = struct.Struct("=I")
_LAST_DATA_RECV_OFFSET = 52


def kernel_wait_s(request: web.BaseRequest) -> float | None:
    """How long ago the kernel received this request's last bytes, read as the handler starts:
    the time the request sat in the accept queue, the socket's buffer and the event loop's
    queue before the gateway got to it. None where the platform does not tell (not Linux, not
    TCP). A saturated process shows here first: its handlers are quick, the wait is before them.
    """
    if _TCP_INFO is None or request.transport is None:
        return None
    sock = request.transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except OSError:  # the client has gone already
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    (ms,) = _LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_OFFSET)
    return float(ms) / 1000


def checked_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """A copy of the request headers; a value that is not UTF-8 cannot be forwarded, so 400."""
    headers = CIMultiDict(request.headers)
    for name, value in headers.items():
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                raise BadRequest(f"The {name} header is not valid UTF-8") from exc
    return headers


async def read_body(
    request: web.BaseRequest, headers: CIMultiDict[str], *, limit: int, timeout_s: float
) -> bytes:
    """The identity body, within `limit` bytes (before and after decoding) and `timeout_s`.

    When the body is decoded, its `Content-Encoding` is removed from `headers`.
    """
    if not request.body_exists:
        return b""
    if request.content.is_eof() and not inflatable(headers.get("Content-Encoding", "")):
        # All of it is here already (a small body comes with its head): nothing to wait for.
        return await _read_raw(request, limit)
    try:
        async with asyncio.timeout(timeout_s):
            raw = await _read_raw(request, limit)
            encoding = headers.get("Content-Encoding", "")
            if not raw or not inflatable(encoding):
                return raw
            body = await inflate(raw, limit)
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s") from exc
    except InflatedTooLarge as exc:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes once decoded") from exc
    except InflateError as exc:
        raise BadEncoding(f"The request body is not valid {encoding.strip()} data") from exc
    headers.popall("Content-Encoding", None)
    return body


async def _read_raw(request: web.BaseRequest, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Request body of {request.content_length} bytes exceeds {limit}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes") from exc
    if len(body) > limit:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
    return body
