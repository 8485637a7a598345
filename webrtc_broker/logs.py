"""Process-wide logging set-up shared by every command."""

from __future__ import annotations

import logging


def configure(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # aiortc and aioice log every packet-level event at INFO or DEBUG.
    for noisy in ("aioice", "aiortc", "websockets", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
