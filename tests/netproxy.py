"""A TCP proxy for tests that delivers what the client sends in small, delayed segments.

Real networks and proxies hand a server a request body in pieces; a server that reads "what is
buffered" instead of "up to the end" works on loopback and fails in production. Put this between
a test client and a server to get the production behaviour on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class SegmentingProxy:
    """Forward `127.0.0.1:<port>` to `upstream`; client→server bytes go out at most `segment` bytes
    at a time with `delay` seconds between writes (server→client is passed through as is).

    `pause_in_body` (bytes) adds one longer `pause` once that many bytes of the first request's
    body have been forwarded: a body split across two TCP segments `pause` seconds apart."""

    upstream_host: str
    upstream_port: int
    segment: int = 512
    delay: float = 0.002
    pause_in_body: int | None = None
    pause: float = 0.3
    port: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SegmentingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_w.close()
            return
        up = asyncio.create_task(self._pump(client_r, server_w, segmented=True))
        down = asyncio.create_task(self._pump(server_r, client_w, segmented=False))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            # The client finished sending (half-close) or the server answered and closed: let
            # the answer through before tearing down.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({down}, timeout=30)
        finally:
            for task in (up, down):
                task.cancel()
                self._tasks.discard(task)
            for writer in (server_w, client_w):
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, segmented: bool
    ) -> None:
        head = bytearray()  # the first request's bytes until its header block ends
        pause_at: int | None = None  # stream offset of the pause, once the headers are seen
        sent = 0
        try:
            while data := await reader.read(65536):
                if not segmented:
                    writer.write(data)
                    await writer.drain()
                    continue
                if self.pause_in_body is not None and pause_at is None and len(head) < 65536:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end >= 0:
                        pause_at = end + 4 + self.pause_in_body
                for start in range(0, len(data), self.segment):
                    piece = data[start : start + self.segment]
                    if pause_at is not None and sent < pause_at <= sent + len(piece):
                        cut = pause_at - sent
                        writer.write(piece[:cut])
                        await writer.drain()
                        await asyncio.sleep(self.pause)
                        piece, sent = piece[cut:], sent + cut
                    writer.write(piece)
                    await writer.drain()
                    sent += len(piece)
                    await asyncio.sleep(self.delay)
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


@contextlib.asynccontextmanager
async def segmenting_proxy(
    host: str, port: int, **options: float | int | None
) -> AsyncIterator[SegmentingProxy]:
    """A started SegmentingProxy in front of `host:port`, closed on exit."""
    proxy = SegmentingProxy(host, port, **options)  # type: ignore[arg-type]
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
