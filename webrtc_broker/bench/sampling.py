"""CPU time and resident memory of processes, read from /proc.

CPU is compared between two snapshots (utime + stime ticks), so a process's
CPU % is its average over the measured window, in percent of one core (a
process on two full cores reads 200). Memory is sampled repeatedly and kept
as mean and peak. The whole machine's busy time is sampled the same way: what
it spent beyond the bench's own processes is other load on the machine (other
developers' tests, here), which makes a noisy run recognisable.

procfs reads are served from kernel memory and never block on I/O, so these
functions are called straight from the event loop.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid``; ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid``; ``None`` once it is gone."""
    try:
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    return int(statm.split()[1]) * PAGE_SIZE


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass(frozen=True)
class Watched:
    role: str
    """``commserver``, ``coordinator``, ``worker`` or ``bench`` (this process)."""
    name: str
    pid: int


@dataclass(slots=True)
class _Track:
    watched: Watched
    cpu_start: float | None
    rss: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    watched: Watched
    cpu_percent: float | None
    rss_mb_mean: float | None
    rss_mb_max: float | None


class WindowSampler:
    """CPU over a window (start/stop snapshots) and RSS sampled during it."""

    def __init__(self, processes: list[Watched]) -> None:
        self._tracks: list[_Track] = []
        self._processes = processes
        self._started = 0.0
        self._machine_start = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._machine_start = machine_busy_seconds()
        self._tracks = [_Track(w, cpu_seconds(w.pid)) for w in self._processes]
        self.sample()

    def sample(self) -> None:
        for track in self._tracks:
            rss = rss_bytes(track.watched.pid)
            if rss is not None:
                track.rss.append(rss)

    def stop(self) -> tuple[list[Usage], float]:
        """Each process's usage, and the machine's busy % (of one core) over the window."""
        self.sample()
        elapsed = max(time.monotonic() - self._started, 1e-9)
        machine = 100.0 * (machine_busy_seconds() - self._machine_start) / elapsed
        usages = []
        for track in self._tracks:
            end = cpu_seconds(track.watched.pid)
            cpu = (
                None
                if end is None or track.cpu_start is None
                else 100.0 * (end - track.cpu_start) / elapsed
            )
            rss = track.rss
            usages.append(
                Usage(
                    track.watched,
                    cpu,
                    sum(rss) / len(rss) / MB if rss else None,
                    max(rss) / MB if rss else None,
                )
            )
        return usages, machine


def udp_ports(pid: int) -> list[int] | None:
    """The local port of every UDP socket ``pid`` holds (one entry per socket); ``None`` if gone.

    Which mode a comm server's peer connections really use shows here: a
    socket per connection on as many ports, or one port for all of them. The
    process's file descriptors name socket inodes; its network namespace's
    ``net/udp`` and ``net/udp6`` tables give each inode's local address.
    """
    base = Path(f"/proc/{pid}")
    try:
        inodes = set()
        for fd in os.listdir(base / "fd"):
            with contextlib.suppress(OSError):  # closed since the listing
                link = os.readlink(base / "fd" / fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        tables = [(base / "net" / name).read_text() for name in ("udp", "udp6")]
    except OSError:
        return None
    ports = []
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)
