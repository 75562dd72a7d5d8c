"""Raw HTTP/1.1 over a socket: for requests no well-behaved client library would send."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from multidict import CIMultiDict


@dataclass
class RawAnswer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


def parse_answer(data: bytes) -> RawAnswer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return RawAnswer(int(status_line.split(" ", 2)[1]), headers, body)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (or resets) the connection; the test's own
    timeout bounds the wait."""
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionError:
        pass
    return b"".join(chunks)


async def raw_exchange(port: int, payload: bytes) -> RawAnswer:
    """Send bytes as they are; the request must ask for `Connection: close` or be refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return parse_answer(await read_until_closed(reader))
    finally:
        writer.close()
