"""A deadline for every HTTP request, WebSocket upgrades included.

uvicorn bounds the gap *between* requests on a kept-alive connection, but not
the request itself: a TCP connection that sends nothing, or half a request
and then a byte now and then (slowloris), holds its socket for as long as it
likes, and a few thousand of them exhaust the process's file descriptors.

:func:`handshake_limited` returns uvicorn's httptools protocol with one
addition: from the moment a connection is made (or the next request on it
begins) the whole request must arrive within the deadline: headers, body,
or the upgrade to a WebSocket. Otherwise the TCP connection is closed. Once
upgraded, a WebSocket is bounded by its pings and, for clients, by the idle
timeout of :mod:`coordinator.session`; responses are not bounded here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


def handshake_limited(timeout: float, on_timeout: Callable[[], None]) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, closing requests not complete within ``timeout`` seconds.

    ``on_timeout`` is called once per connection closed for it (to count it).
    The class is made per server so that the deadline and the counter belong
    to one coordinator, not to the module.
    """

    class HandshakeLimitedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            on_timeout()
            if self.client is not None:
                logger.debug("request from %s:%d not complete in %g s", *self.client, timeout)
            self.transport.close()

        def connection_made(  # type: ignore[override]
            self, transport: asyncio.Transport
        ) -> None:
            super().connection_made(transport)
            self._arm()  # a silent connection is bounded too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # the next request on a kept-alive connection

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            # The upgrade hands the transport to the WebSocket protocol; a timer
            # left here would close a healthy WebSocket later.
            self._disarm()
            super().handle_websocket_upgrade()

    return HandshakeLimitedProtocol
