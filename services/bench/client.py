"""A small keep-alive HTTP/1.1 client on asyncio, built for the load generator.

It parses only what the generator needs (the status, the body length and the start of an
error body), so sending one request costs little CPU on a machine shared with the system
under test.
"""

import asyncio
from collections import deque

# The start of one response body per error status is kept, to show why requests failed.
ERROR_BODY_CHARS = 300


def build_post(host: str, port: int, path: str, body: bytes) -> bytes:
    """Return the bytes of one keep-alive `POST path` with a JSON body."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time and parses the status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.error_body = b""
        self._status = 0
        self._head_end = 0
        self._body_end = -1
        self._chunked = False
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            self._complete_if_whole()

    def send(self, request: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self._body_end = -1
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete_if_whole(self) -> None:
        if self._body_end < 0 and not self._parse_head():
            return
        if self._chunked:
            end = self.buffer.find(b"\r\n0\r\n\r\n", self._body_end - 2)
            if end < 0:
                return
            end += 7
        elif len(self.buffer) >= self._body_end:
            end = self._body_end
        else:
            return
        if self._status >= 300:
            self.error_body = bytes(self.buffer[self._head_end : end][:ERROR_BODY_CHARS])
        del self.buffer[:end]
        waiter, self.waiter = self.waiter, None
        if self._close_after:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(self._status)

    def _parse_head(self) -> bool:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = bytes(self.buffer[:head_end]).lower()
        self._status = int(head[9:12])
        self._chunked = b"\r\ntransfer-encoding: chunked" in head
        self._close_after = b"\r\nconnection: close" in head
        length = 0
        marker = head.find(b"\r\ncontent-length:")
        if marker >= 0:
            line_end = head.find(b"\r\n", marker + 2)
            length = int(head[marker + 17 : line_end if line_end >= 0 else None])
        self._head_end = head_end + 4
        self._body_end = self._head_end + length
        return True


class ConnectionPool:
    """Up to `size` keep-alive connections to one host; callers queue when all are busy."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.opened = 0
        self.waits = 0
        self._idle: list[_Connection] = []
        self._every: list[_Connection] = []
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self.opened -= 1
        if self.opened < self.size:
            self.opened += 1
            try:
                _, protocol = await asyncio.get_running_loop().create_connection(
                    _Connection, self.host, self.port
                )
            except OSError:
                self.opened -= 1
                raise
            self._every.append(protocol)
            return protocol
        self.waits += 1
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            # A connection handed over just before the cancellation must not be lost.
            if waiter.done() and not waiter.cancelled():
                lost = waiter.result()
                if lost is not None:
                    self.release(lost)
            raise
        return handed if handed is not None else await self.acquire()

    def release(self, connection: _Connection) -> None:
        usable = None if connection.closed else connection
        if usable is None:
            self.opened -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # A waiter handed None opens a connection of its own.
                waiter.set_result(usable)
                return
        if usable is not None:
            self._idle.append(usable)

    def close(self) -> None:
        """Close every connection, busy ones included, so no socket outlives the run."""
        for connection in self._every:
            connection.close()
        self._every.clear()
        self._idle.clear()
