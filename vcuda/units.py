"""Units and the request rules for ``vcuda-core`` and ``vcuda-memory``. Standard library only.

``vcuda-core`` counts percent of one GPU: 1..100 is a share of one GPU (100 = the whole GPU, exclusive),
200, 300, ... are that many whole GPUs, exclusive. ``vcuda-memory`` is MiB on each GPU the container uses.
"""

import re
from decimal import Decimal, InvalidOperation
from typing import Final

from vcuda.errors import ContractError

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

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: object) -> int:
    """Parse a Kubernetes quantity that must be a whole number (extended resources are integers).

    >>> parse_quantity("4096"), parse_quantity("1k"), parse_quantity(30)
    (4096, 1000, 30)
    """
    if isinstance(text, bool):
        raise ContractError(f"quantity {text!r} is not a number")
    if isinstance(text, int):
        value = Decimal(text)
    else:
        match = _QUANTITY.match(str(text).strip())
        if match is None:
            raise ContractError(f"quantity {text!r} is not a Kubernetes quantity")
        try:
            value = Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]
        except InvalidOperation as err:
            raise ContractError(f"quantity {text!r} is not a number") from err
    if value != value.to_integral_value():
        raise ContractError(f"quantity {text!r} is not a whole number")
    return int(value)


def mib_to_bytes(mib: int) -> int:
    return mib * MIB


def bytes_to_mib(count: int) -> int:
    """Whole MiB, rounded down (a partial MiB is never promised to anyone)."""
    return count // MIB
