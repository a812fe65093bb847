"""One settings loader for both binaries: flags, environment and config-file keys from one pydantic model.

The convention both binaries follow (docs/plugin.md "Configuration", docs/extender.md "Settings"):

- each field of the model is a setting: ``--kebab-case`` flag, ``<PREFIX><UPPER_CASE>`` environment variable,
  ``camelCase`` config-file key (the field's own ``snake_case`` name and a renamed setting's new name are
  read too); ``--config-file`` / ``<PREFIX>CONFIG_FILE`` names the file;
- precedence: flags > environment > config file > defaults;
- the config file is a YAML mapping with ``version: v1``; an unknown key, an unknown ``<PREFIX>...``
  variable, another version or a setting spelled twice in one file is refused;
- the field's docstring is its ``--help`` text, followed by its default, its choices (enums, ``Literal``,
  booleans) and its environment variable;
- values from all sources are validated once, by the model; a bad one is reported naming the flag, the field,
  where it came from (the flag, the variable, the file) and the value, bounded (:func:`vcuda.errors.shown`:
  a YAML "billion laughs" costs nothing to load and forever to ``repr``). The binaries exit 2 on it.
"""

import argparse
import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kube_vgpu_cli.build import package_version
from vcuda.errors import shown

__all__ = ["CONFIG_VERSION", "Cli", "FileValues", "Sources", "camel_of", "choices_of", "flag_of", "help_of"]

CONFIG_VERSION: Final = "v1"
M = TypeVar("M", bound=BaseModel)

_LITERAL: Final = re.compile(r"``([^`]*)``|:\w+:`~?([^`]*)`")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def camel_of(name: str) -> str:
    """A field's config-file key: ``device_list_strategy`` -> ``deviceListStrategy``."""
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _is_collection(info: FieldInfo) -> bool:
    kind = _unwrap(info.annotation)
    return typing.get_origin(kind) in {frozenset, set, list, tuple} or kind in {frozenset, set, list, tuple}


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


@dataclass(frozen=True)
class Sources:
    """What the command line and the environment say, before the config file is read."""

    flags: dict[str, Any]
    """field -> value, for the flags given."""
    env: dict[str, Any]
    """field -> value, for the variables set."""
    variables: dict[str, str]
    """field -> the variable its value came from."""

    def given(self, name: str) -> Any:
        """A setting from the flags or else the environment (the config file and the node's name)."""
        return self.flags.get(name, self.env.get(name))

    def origins(self) -> dict[str, str]:
        return {**{n: f"env {v}" for n, v in self.variables.items()}, **dict.fromkeys(self.flags, "flag")}


@dataclass(frozen=True)
class FileValues:
    """Settings read from a config file: field -> value, and field -> where (the file, a ``nodeConfig``
    entry)."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def update(self, values: Mapping[str, Any], where: str) -> "FileValues":
        return FileValues({**self.values, **values}, {**self.origin, **dict.fromkeys(values, where)})


@dataclass(frozen=True, kw_only=True)
class Cli(Generic[M]):
    """How one binary's settings model meets the command line, the environment and its config file."""

    model: type[M]
    prog: str
    description: str
    env_prefix: str
    """The documented prefix: ``KUBE_VGPU_PLUGIN_``, ``KUBE_VGPU_EXTENDER_``. Other variables with it are
    refused (a typo must not be ignored)."""
    error: type[Exception]
    """What the loader raises: the binary's own settings error, which its ``main`` turns into exit code 2."""
    legacy_env_prefixes: tuple[str, ...] = ()
    """Older prefixes still read, below the documented one."""
    env_aliases: Mapping[str, str] = field(default_factory=dict)
    """Other environment names (older plugins' ``MIG_STRATEGY``...) -> field; below both prefixes."""
    flag_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """field -> the flags it is spelled as first (a renamed setting); its own ``--field-name`` still works."""
    not_in_file: frozenset[str] = frozenset({"config_file"})
    """Fields that only flags and variables set."""
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
        """(field -> value, field -> the variable it came from): prefix > legacy prefixes > aliases. A
        variable with the documented prefix that names no setting is refused."""
        known = {*self.env_aliases, *(self.env_name(n) for n in self.model.model_fields)}
        unknown = sorted(k for k in env if k.startswith(self.env_prefix) and k not in known)
        if unknown:
            raise self.error(f"unknown environment variables: {', '.join(unknown)}")
        names = [(alias, name) for alias, name in self.env_aliases.items()]
        for prefix in (*reversed(self.legacy_env_prefixes), self.env_prefix):
            names += [(prefix + n.upper(), n) for n in self.model.model_fields]
        values: dict[str, str] = {}
        origin: dict[str, str] = {}
        for variable, name in names:
            if variable in env:
                values[name], origin[name] = env[variable], variable
        return values, origin

    def sources(self, argv: Sequence[str] | None, env: Mapping[str, str]) -> Sources:
        values, variables = self.read_env(env)
        return Sources(self.parse_flags(argv), values, variables)

    def read_file(self, path: Path) -> dict[str, Any]:
        """The config file's YAML mapping, not yet checked for its version (NVIDIA's file has its own)."""
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise self.error(f"config file {path}: cannot be read: {err}") from err
        if doc is None:
            return {}  # empty: refused for its missing version
        if not isinstance(doc, dict):
            raise self.error(f"config file {path}: must be a mapping with version: {CONFIG_VERSION}")
        return doc

    def check_version(self, doc: Mapping[str, Any], path: Path) -> None:
        version = doc.get("version")
        if version != CONFIG_VERSION:
            raise self.error(
                f"config file {path}: version {shown(version)} is not supported, use {CONFIG_VERSION}"
            )

    def file_keys(
        self, doc: Mapping[str, Any], where: str, allowed: frozenset[str] = frozenset()
    ) -> FileValues:
        """field -> value for a mapping of config-file keys; ``allowed`` keys are the caller's."""
        by_key = self._file_keys()
        unknown = sorted((k for k in doc if k not in by_key and k not in allowed), key=str)
        if unknown:
            raise self.error(f"{where}: unknown setting {shown(unknown[0])}")
        values: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in doc.items():
            if key in by_key:
                name = by_key[key]
                if name in spelled:
                    raise self.error(f"{where}: {spelled[name]!r} and {key!r} are the same setting")
                values[name], spelled[name] = value, key
        return FileValues().update(values, where)

    def _file_keys(self) -> dict[str, str]:
        """Every key a setting may have in the file: camelCase (documented), snake_case, renamed -> field."""
        keys: dict[str, str] = {}
        for name in self.model.model_fields:
            if name not in self.not_in_file:
                renamed = [f.removeprefix("--").replace("-", "_") for f in self.flag_aliases.get(name, ())]
                keys |= {k: name for n in (name, *renamed) for k in (camel_of(n), n)}
        return keys

    def settle(self, sources: Sources, from_file: FileValues = FileValues()) -> M:
        """Merge (flags > environment > file > defaults) and validate once; raises :attr:`error`."""
        merged = {**from_file.values, **sources.env, **sources.flags}
        origins = {**dict.fromkeys(from_file.values, "config file"), **from_file.origin, **sources.origins()}
        fields = self.model.model_fields
        for name, value in list(merged.items()):
            if name not in fields:
                continue
            if _is_collection(fields[name]) and isinstance(value, str):  # a comma list: a flag, a variable
                merged[name] = [v for v in value.split(",") if v.strip()]
            elif not _is_collection(fields[name]) and isinstance(value, list | dict):
                # Before pydantic: an enum's own error message is the value's full repr (a billion laughs).
                raise self.error(self._problem(name, origins, "must be a single value", value))
        try:
            return self.model.model_validate(merged)
        except ValidationError as err:
            raise self.error(self._error(err, origins)) from err

    def _error(self, err: ValidationError, sources: Mapping[str, str]) -> str:
        """The first problem, naming the flag, the field, where the value came from and the value."""
        first = err.errors()[0]
        if not first["loc"]:  # the model's own check across fields: its message says it all
            return f"invalid settings: {first['msg']}"
        key = str(first["loc"][0])
        by_alias = {(i.alias or n): n for n, i in self.model.model_fields.items()}
        name = by_alias.get(key, key)
        if first["type"] == "extra_forbidden":
            return f"unknown setting {shown(name)} (from {sources.get(name, 'config file')})"
        if first["type"] == "missing":  # its input is every other setting
            return f"invalid setting {self.flags(name)[0]} ({name}): {first['msg']}"
        return self._problem(name, sources, first["msg"], first.get("input"))

    def _problem(self, name: str, sources: Mapping[str, str], what: str, value: Any) -> str:
        source = sources.get(name, "config file")
        return f"invalid setting {self.flags(name)[0]} ({name}, from {source}): {what}, got {shown(value)}"
