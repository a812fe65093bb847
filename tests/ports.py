"""Free loopback ports for servers that take fixed ports from their settings."""

import random
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()
_LOWEST = 10_000


def _ephemeral_range() -> range:
    """The ports the kernel gives to outgoing connections: a port chosen from them may be taken as some
    client's source port between our probe and the server's bind (EADDRINUSE; seen in CI)."""
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _candidates() -> list[int]:
    ephemeral = _ephemeral_range()
    below = range(_LOWEST, max(_LOWEST, ephemeral.start))
    above = range(min(ephemeral.stop, 65536), 65536)
    return [*below, *above]


def free_port() -> int:
    """A loopback port that was free a moment ago, outside the kernel's ephemeral range (so no outgoing
    connection takes it before the server binds it), and never one this process handed out before (two
    listeners of one process must not get the same one)."""
    candidates = _candidates()
    for port in random.sample(candidates, k=min(len(candidates), 2000)):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range")
