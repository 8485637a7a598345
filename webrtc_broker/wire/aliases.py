"""Alias ranges: who picks which aliases, so that two pickers never collide.

The coordinator hands clients (and servers of the original protocol) aliases
counted up from milliseconds since the epoch x 1000: about 1.8 x 2**50 today,
2**52 only in the year 2112. A comm server picks its own alias at random in
the range above, keeps it for the life of its process and proposes it at
every registration, so that its identity in the mesh survives reconnects of
its coordinator link. Everything stays below 2**53, which JavaScript numbers
hold exactly.
"""

from __future__ import annotations

import secrets

SERVER_ALIASES = range(2**52, 2**53)


def random_server_alias() -> int:
    return SERVER_ALIASES.start + secrets.randbelow(len(SERVER_ALIASES))
