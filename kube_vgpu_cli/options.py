"""One settings loader for both binaries: flags, environment and config-file keys from one pydantic model.

Each field of the model is a setting: ``--kebab-case`` flag, ``<PREFIX><UPPER_CASE>`` environment variable,
``camelCase`` config-file key (the binaries read their files). The field's docstring is its ``--help``
text, followed by its default, its choices (enums, ``Literal``, booleans) and its environment variable.
Values from all sources are validated once, by the model; a bad one is reported naming the flag, the
field and the source it came from.
"""

import argparse
import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kube_vgpu_cli.build import package_version

__all__ = ["Cli", "choices_of", "flag_of", "help_of"]

_LITERAL: Final = re.compile(r"``([^`]*)``|:\w+:`~?([^`]*)`")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def choices_of(info: FieldInfo) -> tuple[str, ...]:
    """The values a field accepts when they are few: an enum's, a ``Literal``'s, a boolean's."""
    kind = _unwrap(info.annotation)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(str(m.value) for m in kind)
    if typing.get_origin(kind) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(kind))
    if kind is bool:
        return ("true", "false")
    return ()


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, frozenset | set):
        return ",".join(str(v) for v in sorted(value)) or "(none)"
    if value is None or value == "":
        return "(unset)"
    return str(value)


def _plain(doc: str | None) -> str:
    """A docstring as one line of plain text: reStructuredText literals and roles unwrapped."""
    text = _LITERAL.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), doc or "")
    return " ".join(text.split())


def help_of(info: FieldInfo, env_name: str) -> str:
    default = (
        "required"
        if info.default is PydanticUndefined and info.default_factory is None
        else (f"default: {_shown(info.get_default(call_default_factory=True))}")
    )
    parts = [_plain(info.description) or "(undocumented)", f"[{default}"]
    choices = choices_of(info)
    if choices:
        parts.append(f"; choices: {', '.join(choices)}")
    parts.append(f"; env: {env_name}]")
    return (parts[0] + " " + "".join(parts[1:])).replace("%", "%%")


@dataclass(frozen=True, kw_only=True)
class Cli:
    """How one binary's settings model meets the command line and the environment."""

    model: type[BaseModel]
    prog: str
    description: str
    env_prefix: str
    """The documented prefix: ``KUBE_VGPU_PLUGIN_``, ``KUBE_VGPU_EXTENDER_``."""
    legacy_env_prefixes: tuple[str, ...] = ()
    """Older prefixes still read, below the documented one."""
    env_aliases: Mapping[str, str] = field(default_factory=dict)
    """Other environment names (older plugins' ``MIG_STRATEGY``...) -> field; below both prefixes."""
    flag_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """field -> the flags it is spelled as first (a renamed setting); its own ``--field-name`` still works."""
    epilog: str = ""

    def env_name(self, name: str) -> str:
        return self.env_prefix + name.upper()

    def flags(self, name: str) -> list[str]:
        """A field's flags, the documented one first."""
        return [*self.flag_aliases.get(name, ()), flag_of(name)]

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description, epilog=self.epilog)
        parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
        for name in self.model.model_fields:
            self._add(parser, name)
        return parser

    def _add(self, parser: argparse.ArgumentParser, name: str) -> None:
        info = self.model.model_fields[name]
        choices = choices_of(info)
        flags = self.flags(name)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if _unwrap(info.annotation) is bool else {}
        metavar = "{" + ",".join(choices) + "}" if choices else flags[0].rsplit("-", 1)[-1].upper()
        parser.add_argument(
            *flags, dest=name, default=None, metavar=metavar, help=help_of(info, self.env_name(name)), **extra
        )

    def parse_flags(
        self, argv: Sequence[str] | None, parser: argparse.ArgumentParser | None = None
    ) -> dict[str, Any]:
        """Only the flags given (defaults stay ``None``), so that precedence can tell them apart."""
        parsed = vars((parser or self.parser()).parse_args(argv))
        return {k: v for k, v in parsed.items() if v is not None}

    def read_env(self, env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(field -> value, field -> the variable it came from): prefix > legacy prefixes > aliases."""
        names = [(alias, name) for alias, name in self.env_aliases.items()]
        for prefix in (*reversed(self.legacy_env_prefixes), self.env_prefix):
            names += [(prefix + n.upper(), n) for n in self.model.model_fields]
        values: dict[str, str] = {}
        origin: dict[str, str] = {}
        for variable, name in names:
            if variable in env:
                values[name], origin[name] = env[variable], variable
        return values, origin

    def error(self, err: ValidationError, sources: Mapping[str, str]) -> str:
        """The first problem, naming the flag, the field and where the value came from."""
        first = err.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "settings"
        by_alias = {(i.alias or n): n for n, i in self.model.model_fields.items()}
        name = by_alias.get(key, key)
        source = sources.get(name, "config file")
        if first["type"] == "extra_forbidden":
            return f"unknown setting {name!r} (from {source})"
        return f"invalid setting {self.flags(name)[0]} ({name}, from {source}): {first['msg']}"
