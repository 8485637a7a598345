"""The native yardstick: a pair of Chromium's peer connections, as fast as they go.

The aiortc pair (:mod:`.baseline`) says what one Python connection moves; this
says what the native WebRTC stack browsers use (libwebrtc) moves on the same
machine at the same moment, with the same message size and channel kind. Two
``RTCPeerConnection`` objects in one headless Chromium page connect to each
other and one data channel sends as fast as its flow control allows (the page:
``webrtc_broker/static/bench/native-pair.js``).

It runs in its own process, like the aiortc pair, before any cluster exists,
so the browser's CPU never competes with the broker's measurement. Playwright
drives Debian's ``chromium`` (no browser download); both are optional, so
:func:`unavailable` says what is missing and the bench reports the aiortc
ratio alone instead of failing. Playwright is imported only in the
measurement process.

The two peers reach each other through the machine's own host candidates (as
the aiortc pair's do): Chromium offers no loopback candidate, and packets to
an address of this machine never leave it.

Run as ``python -m webrtc_broker.bench.nativepair --size 100``: it prints one
JSON object (:class:`~webrtc_broker.bench.results.Baseline`, ``stack``
``chromium``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sys
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.progress import Progress

from webrtc_broker.bench.baseline import WARMUP
from webrtc_broker.bench.results import Baseline
from webrtc_broker.cluster import spawn, stop

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium package; a ``chromium`` on ``PATH`` is used when this is absent."""
PAGE_SCRIPT = files("webrtc_broker") / "static" / "bench" / "native-pair.js"
HEADLESS_ARGS = (
    "--no-sandbox",  # root in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Chromium headless with nothing of its own on the network: no GPU, no QUIC, no
background traffic (the browser tests launch it so too)."""
LAUNCH_ARGS = (
    *HEADLESS_ARGS,
    # Plain host candidates: the page's two peers need no mDNS to find each other.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)
START_TIMEOUT = 60.0
"""Seconds for Chromium to start and the pair to connect, on top of the measurement."""


def chromium_path() -> Path | None:
    """The Chromium executable to drive, or ``None`` when none is installed."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def playwright_installed() -> bool:
    """Whether Playwright can be imported (without importing it: it is heavy)."""
    return importlib.util.find_spec("playwright") is not None


def unavailable() -> str | None:
    """Why the Chromium pair cannot be measured here (one line); ``None`` when it can."""
    missing = []
    if chromium_path() is None:
        missing.append("chromium (apt-get install chromium)")
    if not playwright_installed():
        missing.append("Playwright (pip install 'webrtc-broker[bench]')")
    if not missing:
        return None
    return f"Chromium pair not measured: {' and '.join(missing)} not installed"


async def measure(size: int, reliable: bool, seconds: float) -> Baseline:
    """Drive the page: ``WARMUP`` seconds of traffic, then count ``seconds`` of it."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 (heavy, optional)

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(unavailable())
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            page = await browser.new_page()
            await page.add_script_tag(content=PAGE_SCRIPT.read_text())
            counts: dict[str, Any] = await page.evaluate(
                "options => measureNativePair(options)",
                {"size": size, "reliable": reliable, "warmupMs": WARMUP * 1000, "seconds": seconds},
            )
        finally:
            await browser.close()
    received = int(counts["received"])
    return Baseline(
        size=size,
        reliable=reliable,
        seconds=seconds,
        sent=int(counts["sent"]),
        received=received,
        messages_per_s=received / seconds,
        mb_per_s=received * size / seconds / 1e6,
        stack="chromium",
    )


async def measure_in_subprocess(
    size: int, reliable: bool, seconds: float, progress: Progress, log: Path
) -> tuple[Baseline | None, str | None]:
    """The Chromium pair measured in its own process: (result, None), or (None, why not).

    Never raises for the pair itself: a bench without its native yardstick still
    measures the broker. Its stderr goes to ``log``.
    """
    missing = unavailable()
    if missing is not None:
        return None, missing
    task = progress.add_task("yardstick: Chromium pair", total=None)
    args = ["--size", str(size), "--seconds", str(seconds)]
    if reliable:
        args.append("--reliable")
    with log.open("ab") as stderr:
        process = await spawn(
            *args,
            module="webrtc_broker.bench.nativepair",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        try:
            async with asyncio.timeout(START_TIMEOUT + WARMUP + seconds):
                output, _ = await process.communicate()
        except TimeoutError:
            return None, "Chromium pair not measured: it did not finish in time"
        finally:
            await stop([process])
            progress.remove_task(task)
    if process.returncode != 0:
        return None, (
            f"Chromium pair not measured: it failed (exit {process.returncode}): {last_line(log)}"
        )
    data: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    return Baseline(**data), None


def last_line(log: Path) -> str:
    """The last line of the measurement's stderr: the error a failure ended with (the log
    itself goes with the bench's temporary folder)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--reliable", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.size, args.reliable, args.seconds))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
