"""UDP ports for the tests: free ones to bind, and the sockets a process holds.

Tests of the comm server's port modes count its UDP sockets (one in
single-port mode, one per connection otherwise) and need ports or ranges of
ports nobody holds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket


def free_udp_range(size: int) -> tuple[int, int]:
    """``size`` consecutive ports free for UDP now, below the ephemeral range (32768-)."""
    for low in range(20000, 32000, size):
        held: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("0.0.0.0", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError("no free UDP port range")


def udp_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every UDP socket process ``pid`` holds, read from /proc.

    The socket inodes among ``/proc/PID/fd`` are matched against
    ``/proc/PID/net/udp`` and ``udp6``, the tables of the process's own
    network namespace.
    """
    inodes: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for entry in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{entry}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found: list[tuple[str, int]] = []
    for table, width in (("udp", 4), ("udp6", 16)):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)  # the header
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    host, port = fields[1].split(":")
                    found.append((_proc_address(host, width), int(port, 16)))
    return found


def udp_ports(pid: int) -> list[int]:
    """The local ports of :func:`udp_sockets`, sorted."""
    return sorted(port for _, port in udp_sockets(pid))


def _proc_address(text: str, width: int) -> str:
    """An address as /proc/net/udp prints it (host-order 32-bit words in hex)."""
    raw = bytes.fromhex(text)
    words = [raw[i : i + 4][::-1] for i in range(0, width, 4)]
    return str(ipaddress.ip_address(b"".join(words)))
