"""Logging set-up shared by both binaries: ``text`` for people, ``json`` (one object per line) for log
pipelines. Both keep the structured fields the code passes with ``extra={...}``."""

import logging
import sys
from enum import StrEnum
from typing import IO, Annotated, Any, Final, Literal

from pydantic import BeforeValidator
from pythonjsonlogger.json import JsonFormatter

__all__ = ["LogFormat", "LogLevel", "adopt_loggers", "configure_logging"]

_HANDLER: Final = "kube-vgpu"
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


LogLevel = Annotated[
    Literal["debug", "info", "warning", "error"],
    BeforeValidator(lambda value: value.lower() if isinstance(value, str) else value),
]
"""A settings field's logging threshold; ``INFO`` and ``info`` alike."""


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class _TextFormatter(logging.Formatter):
    """The classic line, then the structured fields as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(
            f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
            for k, v in _extras(record).items()
        )
        return f"{line} {fields}" if fields else line


def _formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt is LogFormat.JSON:
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
        )
    return _TextFormatter(_TEXT)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as :data:`logging.lastResort` does)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        pass


def configure_logging(
    level: str, fmt: str | LogFormat = LogFormat.TEXT, stream: IO[str] | None = None
) -> None:
    """The root logger at ``level``, writing ``fmt`` to ``stream`` (default: the current ``sys.stderr``).

    Replaces only the handler an earlier call installed, so that calling ``main`` in a test process leaves
    the test runner's own handlers alone.
    """
    handler: logging.Handler = _Stderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(_formatter(LogFormat(fmt)))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def adopt_loggers(*names: str) -> None:
    """Send these loggers' records through the root logger's handler (uvicorn installs its own text handlers
    when its ``Config`` is built), so that ``--log-format`` holds for every line the process writes."""
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
