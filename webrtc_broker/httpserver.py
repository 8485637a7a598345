"""Running uvicorn inside a service's own event loop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service embedding it.

    The comm server drains on SIGTERM; uvicorn's own handlers would stop the
    HTTP side first and re-raise the signal, so they are not installed.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
