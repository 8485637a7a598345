"""A TCP proxy that cuts its connections on demand: a network blip, in front of a real service.

A real coordinator cannot be told to drop one server's WebSocket while it
lives on; putting this proxy between that server and the coordinator can.
Every byte is passed through unchanged, and :meth:`FaultProxy.cut` closes
every connection open at that moment (new ones are accepted as before).
With ``cut_when``, a connection is also closed, both ways, the moment what
its client has sent so far (one chunk per read) satisfies that predicate,
before that chunk is passed on: a failure at one exact step of a protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class FaultProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        cut_when: Callable[[list[bytes]], bool] | None = None,
    ) -> None:
        self._target = (target_host, target_port)
        self._cut_when = cut_when
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, upstream_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer, self._cut_when)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cut_when: Callable[[list[bytes]], bool] | None = None,
    ) -> None:
        sent: list[bytes] = []
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                sent.append(data)
                if cut_when is not None and cut_when(sent):
                    return  # the connection closes both ways, this chunk undelivered
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        """Drop every open connection, both ways, as a failed network path would."""
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
