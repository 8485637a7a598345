"""``webrtc-broker coordinator`` whose client authenticator accepts only listed credentials.

The CLI has no flag for a client authenticator, so the tests that need the
coordinator itself to refuse credentials (HTTP 403 on the WebSocket upgrade)
start this instead: ``python -m tests.browser.allowlist_coordinator --allow
alice coordinator [flags]``. Everything else is the real command.
"""

from __future__ import annotations

import functools
import sys

import coordinator
from tests.allowlist_commserver import AllowList, _pop_allowed
from webrtc_broker.cli import main

if __name__ == "__main__":
    authenticator = AllowList(_pop_allowed(sys.argv))
    # The CLI looks `serve` up when the command runs, so this is the one it calls.
    coordinator.serve = functools.partial(coordinator.serve, authenticator=authenticator)
    main()
