"""The comm server: accepts client sessions, meshes with other servers, relays topics."""

from commserver.server import CommServer
from commserver.service import serve

__all__ = ["CommServer", "serve"]
