"""A tiny description language for fixed-layout C structs, read by Python and emitted as a C header.

The shim's config and usage files are defined once, here in Python (see :mod:`vcuda.shimfile`), and
``python -m vcuda.contract --emit-c-header`` writes the C side. All integers are little-endian, all
structs are packed to natural alignment with explicit padding fields, so Python and C agree byte for byte.
Standard library only.
"""

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from vcuda.errors import ContractError

__all__ = ["Field", "Struct"]

_SCALARS: Final = {
    "u8": ("B", "uint8_t"),
    "u32": ("I", "uint32_t"),
    "i32": ("i", "int32_t"),
    "u64": ("Q", "uint64_t"),
    "i64": ("q", "int64_t"),
}


@dataclass(frozen=True, slots=True)
class Field:
    """A scalar (``u32``…), a char array (``char``, with ``count`` bytes) or an array of sub-structs."""

    name: str
    kind: "str | Struct"
    count: int = 1
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Struct:
    name: str
    fields: tuple[Field, ...]
    doc: str = ""

    @property
    def format(self) -> str:
        return "<" + self._body()

    def _body(self) -> str:
        parts = []
        for f in self.fields:
            if isinstance(f.kind, Struct):
                parts.append(f.kind._body() * f.count)
            elif f.kind == "char":
                parts.append(f"{f.count}s")
            else:
                parts.append(_SCALARS[f.kind][0] * f.count)
        return "".join(parts)

    @property
    def size(self) -> int:
        return struct.calcsize(self.format)

    def offset(self, name: str) -> int:
        at = 0
        for f in self.fields:
            if f.name == name:
                return at
            at += _field_size(f)
        raise KeyError(name)

    def pack(self, values: Mapping[str, Any]) -> bytes:
        return struct.pack(self.format, *self._flatten(values))

    def unpack(self, data: bytes) -> dict[str, Any]:
        if len(data) < self.size:
            raise ContractError(f"{self.name}: {len(data)} bytes, expected {self.size}")
        flat = list(struct.unpack_from(self.format, data))
        flat.reverse()
        return self._build(flat)

    def _flatten(self, values: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for f in self.fields:
            value = values.get(f.name)
            if isinstance(f.kind, Struct):
                items: Sequence[Mapping[str, Any]] = value or []
                for i in range(f.count):
                    out.extend(f.kind._flatten(items[i] if i < len(items) else {}))
            elif f.kind == "char":
                raw = value.encode() if isinstance(value, str) else (value or b"")
                if len(raw) > f.count or (isinstance(value, str) and len(raw) >= f.count):
                    raise ContractError(f"{self.name}.{f.name}: {raw!r} longer than {f.count - 1} bytes")
                out.append(raw)
            elif f.count == 1:
                out.append(value or 0)
            else:
                seq = list(value or [])
                out.extend(seq + [0] * (f.count - len(seq)))
        return out

    def _build(self, flat: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.fields:
            if isinstance(f.kind, Struct):
                sub = f.kind
                out[f.name] = [sub._build(flat) for _ in range(f.count)]
            elif f.kind == "char":
                out[f.name] = flat.pop().split(b"\0", 1)[0]
            elif f.count == 1:
                out[f.name] = flat.pop()
            else:
                out[f.name] = [flat.pop() for _ in range(f.count)]
        return out

    def c_declaration(self) -> str:
        lines = [f"/* {self.doc} */"] if self.doc else []
        lines.append(f"typedef struct {self.name} {{")
        for f in self.fields:
            if isinstance(f.kind, Struct):
                ctype, suffix = f"struct {f.kind.name}", f"[{f.count}]" if f.count > 1 else ""
            elif f.kind == "char":
                ctype, suffix = "char", f"[{f.count}]"
            else:
                ctype, suffix = _SCALARS[f.kind][1], f"[{f.count}]" if f.count > 1 else ""
            comment = f" /* {f.doc} */" if f.doc else ""
            lines.append(f"    {ctype} {f.name}{suffix};{comment}")
        lines.append(f"}} {self.name}_t;")
        lines.append(
            f'_Static_assert(sizeof(struct {self.name}) == {self.size}, "{self.name} layout drifted");'
        )
        return "\n".join(lines)


def _field_size(f: Field) -> int:
    if isinstance(f.kind, Struct):
        return f.kind.size * f.count
    if f.kind == "char":
        return f.count
    return struct.calcsize("<" + _SCALARS[f.kind][0]) * f.count
