"""Keep credentials that travel in WebSocket URLs out of the logs.

``access_log=False`` silences HTTP access lines, but uvicorn's WebSocket
protocols still log every upgrade (``"WebSocket /connect?token=..." [accepted]``)
on the ``uvicorn.error`` logger, query string included. Browsers can only send
a token in the query string, so this filter cuts the query off those lines.
"""

from __future__ import annotations

import logging

_WEBSOCKET_LINE = '"WebSocket %s"'


class QueryStringRedactor(logging.Filter):
    """Drops the query string from uvicorn's WebSocket handshake log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(record.msg, str)
            and _WEBSOCKET_LINE in record.msg
            and isinstance(args, tuple)
            and len(args) >= 2
            and isinstance(args[1], str)
        ):
            path, sep, _ = args[1].partition("?")
            if sep:
                record.args = (args[0], f"{path}?<redacted>", *args[2:])
        return True


def install(logger_name: str = "uvicorn.error") -> None:
    """Attach the redactor to ``logger_name`` once (idempotent)."""
    target = logging.getLogger(logger_name)
    if not any(isinstance(f, QueryStringRedactor) for f in target.filters):
        target.addFilter(QueryStringRedactor())
