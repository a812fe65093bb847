"""Read glibc's ``ld.so.cache`` (what ``ldconfig`` writes): library name -> path, for one architecture.

Pure: bytes in, a mapping out; the caller reads ``<driver root>/etc/ld.so.cache``. Both layouts glibc has
written are understood: the current one (``glibc-ld.so.cache1.1``, glibc >= 2.32 writes only this) and the
old one (``ld.so-1.7.0``) that older glibc writes in front of the current one. Imports only the standard
library (the ``plugin.core`` contract).
"""

import struct
from collections.abc import Mapping
from typing import Final

__all__ = ["FLAGS_BY_MACHINE", "LdCacheError", "parse_ld_cache"]

_NEW_MAGIC: Final = b"glibc-ld.so.cache1.1"
_OLD_MAGIC: Final = b"ld.so-1.7.0"
# new header: magic+version (20), nlibs, len_strings (u32), flags (u8), pad (3), extension offset, 3 unused.
_NEW_HEADER: Final = struct.Struct("<20sIIB3xI12x")
_NEW_ENTRY: Final = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
_OLD_ENTRY_SIZE: Final = 12  # flags, key, value
_ELF_LIBC6: Final = 0x0003
_TYPE_MASK: Final = 0x00FF
_REQUIREMENT_MASK: Final = 0xFF00
# ldconfig's FLAG_X8664_LIB64 / FLAG_AARCH64_LIB64: the 64-bit libraries of the machine.
FLAGS_BY_MACHINE: Final[Mapping[str, int]] = {"x86_64": 0x0300, "aarch64": 0x0A00, "arm64": 0x0A00}


class LdCacheError(ValueError):
    """The bytes are not an ``ld.so.cache`` this module understands."""


def parse_ld_cache(data: bytes, machine: str) -> dict[str, str]:
    """Library name (``libnvidia-ml.so.1``) -> path, first entry wins (ldconfig's priority order).

    Only glibc libraries of ``machine`` (``platform.machine()``) are kept, so a 32-bit copy never wins;
    an unknown machine keeps every glibc library.
    """
    start = _new_format_start(data)
    try:
        _, count, _, _, _ = _NEW_HEADER.unpack_from(data, start)
    except struct.error as err:
        raise LdCacheError("truncated ld.so.cache header") from err
    wanted = FLAGS_BY_MACHINE.get(machine)
    found: dict[str, str] = {}
    for index in range(count):
        offset = start + _NEW_HEADER.size + index * _NEW_ENTRY.size
        try:
            flags, key, value, _, _ = _NEW_ENTRY.unpack_from(data, offset)
        except struct.error as err:
            raise LdCacheError(f"truncated ld.so.cache entry {index}") from err
        if flags & _TYPE_MASK != _ELF_LIBC6:
            continue
        if wanted is not None and flags & _REQUIREMENT_MASK != wanted:
            continue
        found.setdefault(_string(data, start + key), _string(data, start + value))
    return found


def _new_format_start(data: bytes) -> int:
    """Offset of the current-format header: 0, or after the old format's entries (8-byte aligned)."""
    if data.startswith(_NEW_MAGIC):
        return 0
    if not data.startswith(_OLD_MAGIC):
        raise LdCacheError("not an ld.so.cache (unknown magic)")
    old_count = int(struct.unpack_from("<I", data, 12)[0])  # the 11-byte magic, padded to 12
    start = 16 + old_count * _OLD_ENTRY_SIZE
    start = (start + 7) & ~7
    if data[start : start + len(_NEW_MAGIC)] != _NEW_MAGIC:
        raise LdCacheError("old-format-only ld.so.cache (glibc < 2.7) is not supported")
    return start


def _string(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise LdCacheError(f"string offset {offset} lies outside the ld.so.cache")
    return data[offset:end].decode("utf-8", "replace")
