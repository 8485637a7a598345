"""``webrtc-broker commserver`` whose keepalive task fails on every run.

A real process cannot be made to lose a long-lived task on purpose, so the
supervision test starts this instead: ``python -m tests.broken_keepalive_commserver
commserver [flags]``. The supervisor's restarts are made quick and few; everything
else is the real command.
"""

from __future__ import annotations

import commserver.server
from webrtc_broker.cli import main
from webrtc_broker.supervise import RestartPolicy


async def _broken(self: commserver.server.CommServer) -> None:
    raise RuntimeError("keepalive broken on purpose")


def _quick_policy(self: commserver.server.CommServer) -> None:
    self.supervisor._policy = RestartPolicy(max_restarts=2, window=60, first_delay=0.5)


if __name__ == "__main__":
    commserver.server.CommServer._keepalive = _broken  # type: ignore[method-assign]
    original_run = commserver.server.CommServer.run

    async def run(self: commserver.server.CommServer) -> None:
        _quick_policy(self)
        await original_run(self)

    commserver.server.CommServer.run = run  # type: ignore[method-assign]
    main()
