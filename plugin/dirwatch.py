"""Wake on changes to one directory: Linux inotify through ctypes, read by the asyncio loop (no thread).

The kubelet's restart deletes every socket in the device-plugins directory and creates a new
``kubelet.sock`` (NVIDIA's plugin watches the same directory with fsnotify). :func:`watch_dir` answers
None where inotify is unavailable (not Linux, no libc symbol, ``max_user_watches`` exhausted, a filesystem
that refuses watches); the caller then polls.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["DirWatch", "wait_while", "watch_dir"]

log = logging.getLogger(__name__)
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
# IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
_MASK: Final = 0x100 | 0x200 | 0x40 | 0x80 | 0x400 | 0x800 | 0x8000


class DirWatch:
    """An inotify descriptor on one directory; :meth:`changed` returns after an event or a timeout."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 4096):
                pass
        self._event.set()

    async def changed(self, timeout_s: float) -> bool:
        """True when the directory changed (since the last call), False after ``timeout_s`` of silence."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)


def watch_dir(path: Path) -> DirWatch | None:
    """A :class:`DirWatch` on ``path`` (call inside the running loop), or None without inotify."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    except (OSError, AttributeError) as err:
        log.info("no inotify (%s): polling %s", err, path)
        return None
    if fd < 0:
        log.info("inotify_init1: %s: polling %s", os.strerror(ctypes.get_errno()), path)
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path), _MASK) < 0:
        log.info("inotify_add_watch %s: %s: polling", path, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return DirWatch(fd)


async def wait_while(still: Callable[[], bool], folder: Path, poll_s: float, recheck_s: float) -> None:
    """Returns once ``still()`` is false, looking again at each change in ``folder`` (inotify; every
    ``recheck_s`` too) or, where inotify is unavailable, every ``poll_s``. The watch is set before the first
    look, so no change falls between the two."""
    watch = watch_dir(folder)
    try:
        while still():
            if watch is None:
                await asyncio.sleep(poll_s)
            else:
                await watch.changed(recheck_s)
    finally:
        if watch is not None:
            watch.close()
