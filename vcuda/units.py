"""Units and the request rules for ``vcuda-core`` and ``vcuda-memory``. Standard library only.

``vcuda-core`` counts percent of one GPU: 1..100 is a share of one GPU (100 = the whole GPU, exclusive),
200, 300, ... are that many whole GPUs, exclusive. ``vcuda-memory`` is MiB on each GPU the container uses.
"""

from typing import Final

__all__ = [
    "CORE_PER_GPU",
    "MAX_GPUS_PER_CONTAINER",
    "MIB",
    "bytes_to_mib",
    "mib_to_bytes",
    "parse_quantity",
]

CORE_PER_GPU: Final = 100
MIB: Final = 1024 * 1024
MAX_GPUS_PER_CONTAINER: Final = 16


def parse_quantity(text: object) -> int:
    """Parse a Kubernetes quantity that must be a whole number (extended resources are integers): the bounded
    parser of :func:`vcuda.request.parse_quantity` (length and exponent checked before any arithmetic, so
    ``1e500000`` costs what ``30`` does); its ``QuantityError`` is a :class:`ContractError`.

    >>> parse_quantity("4096"), parse_quantity("1k"), parse_quantity(30)
    (4096, 1000, 30)
    """
    from vcuda.request import parse_quantity as bounded  # here: vcuda.request imports this module

    return bounded(text)


def mib_to_bytes(mib: int) -> int:
    return mib * MIB


def bytes_to_mib(count: int) -> int:
    """Whole MiB, rounded down (a partial MiB is never promised to anyone)."""
    return count // MIB
