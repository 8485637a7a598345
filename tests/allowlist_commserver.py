"""``webrtc-broker commserver`` whose client authenticator accepts only listed credentials.

The CLI has no flag for a client authenticator yet, so the bad-credentials
tests start this instead: ``python -m tests.allowlist_commserver --allow alice
commserver [flags]``. Everything else is the real command.
"""

from __future__ import annotations

import functools
import sys

import commserver
from webrtc_broker.auth import AuthError, Identity
from webrtc_broker.cli import main


class AllowList:
    """Accepts the listed credentials; the identity is the credential."""

    def __init__(self, allowed: set[bytes]) -> None:
        self._allowed = allowed

    def authenticate(self, credentials: bytes) -> Identity:
        if credentials not in self._allowed:
            raise AuthError("unknown credentials")
        return Identity(credentials)


def _pop_allowed(argv: list[str]) -> set[bytes]:
    allowed = set()
    while "--allow" in argv:
        index = argv.index("--allow")
        allowed.add(argv[index + 1].encode())
        del argv[index : index + 2]
    return allowed


if __name__ == "__main__":
    authenticator = AllowList(_pop_allowed(sys.argv))
    # The CLI looks `serve` up when the command runs, so this is the one it calls.
    commserver.serve = functools.partial(commserver.serve, authenticator=authenticator)
    main()
