"""Read a file a tenant can write (the usage directory, the node directory) without trusting it. Stdlib only.

A tenant writes every directory mounted writable into its containers, so the name the node agent opens may be
a symlink (to ``/etc/shadow``, ``/dev/zero``), a FIFO, a socket, a device node (a container keeps
``CAP_MKNOD`` by default, and opening some devices has effects: ``/dev/watchdog`` arms the node's watchdog),
a directory or a huge or sparse file. :func:`read_tenant_file` first takes an ``O_PATH | O_NOFOLLOW`` handle
on the last path component (it opens nothing: no device driver or FIFO sees an open, a symlink is the link
itself), checks with ``fstat`` that it is a regular file no larger than the layout, then opens that same inode
for reading through ``/proc/self/fd`` (no race with a rename) with ``O_NONBLOCK``, and reads at most
``max_bytes`` even if the file grew meanwhile. Every refusal is a :class:`TenantFileError` whose message says
why; the caller logs it and goes on. The directories above the last component must be ones the tenant cannot
replace (the node agent's own state directory; a mount point inside the container).

:func:`write_tenant_file` is the other direction: the node agent (root) putting a file into such a directory
never writes through a name the tenant planted (``usage.bin.tmp -> /etc/shadow``): the temporary file is
created with ``O_CREAT | O_EXCL`` under a random name (``mkstemp``; a symlink there makes it fail, never
followed), its mode set with ``fchmod`` on the descriptor, and renamed over the target (a rename replaces a
symlink, it does not follow it).
"""

import os
import stat
import tempfile
from pathlib import Path
from typing import Final

from vcuda.errors import ContractError

__all__ = ["OPEN_FLAGS", "TenantFileError", "read_tenant_file", "write_tenant_file"]

OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_HANDLE_FLAGS: Final = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

_KINDS: Final = (
    (stat.S_ISLNK, "a symbolic link (not followed)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class TenantFileError(ContractError):
    """A tenant-writable file was refused (not a regular file, a symlink, too large) or could not be read."""


def read_tenant_file(path: Path | str, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of the regular file at ``path``; raises :class:`TenantFileError` otherwise.

    ``FileNotFoundError`` passes through unchanged: a file not written yet is not an attack.
    """
    try:
        handle = os.open(path, _HANDLE_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise TenantFileError(f"{path}: refused: cannot be looked up: {err.strerror or err}") from err
    try:
        _check(path, os.fstat(handle), max_bytes)
        fd = os.open(f"/proc/self/fd/{handle}", OPEN_FLAGS & ~os.O_NOFOLLOW)  # the inode just checked
    except OSError as err:
        raise TenantFileError(f"{path}: cannot be opened: {err.strerror or err}") from err
    finally:
        os.close(handle)
    try:
        return _read_at_most(fd, max_bytes)
    except OSError as err:
        raise TenantFileError(f"{path}: cannot be read: {err.strerror or err}") from err
    finally:
        os.close(fd)


def _check(path: Path | str, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise TenantFileError(f"{path}: refused: {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise TenantFileError(f"{path}: refused: {st.st_size} bytes, the layout holds {max_bytes}")


def _read_at_most(fd: int, limit: int) -> bytes:
    """Reads until end of file or ``limit`` bytes (a file that grows after ``fstat`` is cut at ``limit``)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_tenant_file(directory: Path, name: str, data: bytes, mode: int) -> None:
    """Atomically puts ``data`` at ``directory/name`` with ``mode``, whatever the tenant left there.

    The temporary name ends in ``.tmp`` (the plugin's start-up removes leftovers of a crash).
    """
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, directory / name)
