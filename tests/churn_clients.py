"""Clients that open sessions with one comm server, for the memory-after-churn test.

``python -m tests.churn_clients --url ws://... --server ALIAS --sessions N
--batch B --mode clean|hold`` opens ``N`` sessions, ``B`` at a time, each
confirmed by a PING echo. ``clean`` closes each session properly as soon as it
is up; ``hold`` keeps them all, prints ``open N`` and waits, so that the test
can end them abruptly from outside: ``SIGKILL`` (the process dies, the kernel
closes its sockets) or ``SIGSTOP`` (a frozen peer that just goes silent, as a
lost network or a suspended laptop does). Runs in its own process so that the
clients' memory and garbage stay out of the server's measurements.
"""

from __future__ import annotations

import argparse
import asyncio

from webrtc_broker.client import BrokerClient

TIMEOUT = 60.0


async def _open(url: str, server: int, *, close: bool) -> BrokerClient:
    client = await BrokerClient.connect(
        url, server=server, keepalive=None, reconnect=None, timeout=TIMEOUT
    )
    await asyncio.wait_for(client.ping(), TIMEOUT)
    if close:
        await client.close()
    return client


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--server", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--mode", choices=("clean", "hold"), required=True)
    args = parser.parse_args()
    held = []
    for start in range(0, args.sessions, args.batch):
        count = min(args.batch, args.sessions - start)
        opened = await asyncio.gather(
            *(_open(args.url, args.server, close=args.mode == "clean") for _ in range(count))
        )
        if args.mode == "hold":
            held.extend(opened)
    print(f"open {len(held)}", flush=True)
    if args.mode == "hold":
        await asyncio.Event().wait()  # until the test kills or freezes this process


if __name__ == "__main__":
    asyncio.run(main())
