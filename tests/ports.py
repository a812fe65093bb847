"""Free loopback ports for servers that take fixed ports from their settings."""

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago, never one this process handed out before: the kernel may give a
    just-released port again, and two listeners of one process must not get the same one."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
