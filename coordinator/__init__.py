"""The coordinator: WebSocket entry point for clients and comm servers.

It assigns aliases, keeps the registry of comm servers, tells each client
which server to use, and relays WebRTC signalling between peers (see
docs/protocol.md, "Flow"). ``create_app`` builds the ASGI app; ``serve``
runs it under uvicorn in the current event loop.
"""

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
