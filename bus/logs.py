"""Configure structlog once per process: console in a terminal, JSON for containers.

Only entry points (the CLI, ``python -m actors.<kind>``) call ``configure_logging``; library
modules just do ``log = structlog.get_logger()``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = [
    "REDACTED",
    "SECRET_KEYS",
    "STACK_DUMP_SIGNAL",
    "configure_logging",
    "dump_stacks_on_signal",
    "redact_secrets",
]

#: ``kill -USR1 PID`` makes a linebus process write every thread's stack to its stderr.
STACK_DUMP_SIGNAL = signal.SIGUSR1

#: Field names whose values never reach a log line, whatever the level.
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "provisioning_token",
        "registration_token",
        "api_token",
        "private_key",
        "secret_key",
        "key_material",
        "authorization",
    }
)
REDACTED = "***"


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(("_password", "_token", "_secret"))


def _redacted(value: Any, depth: int) -> Any:
    """A copy of ``value`` with secret-named fields replaced, through dicts and lists."""
    if depth <= 0:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _is_secret(k) else _redacted(v, depth - 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v, depth - 1) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of every secret-named field by ``***``, at any depth (up to 8 levels)
    of dicts and lists."""
    for key, value in list(event_dict.items()):
        if _is_secret(key):
            event_dict[key] = REDACTED
        elif isinstance(value, (dict, list, tuple)):
            event_dict[key] = _redacted(value, 8)
    return event_dict


class _StderrLogger:
    """A structlog logger that prints to ``sys.stderr`` as it is at each line, not as it was when
    logging was configured: whoever replaces ``sys.stderr`` later (a test runner capturing output,
    an embedding program) gets the lines, and a stream closed since then is never written to."""

    def msg(self, message: str) -> None:
        # One write per line: the processes of a line share one stderr, and with
        # PYTHONUNBUFFERED (the supervisor's children) print() writes the text and its newline
        # as two syscalls, so lines of several processes would interleave mid-line. A single
        # write of up to PIPE_BUF bytes (4 KiB) to a pipe is atomic.
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(
    *, json: bool | None = None, level: str | None = None, stream: Any = None
) -> None:
    """Configure structlog for this process.

    Args:
        json: JSON lines instead of console output; default from ``LINEBUS_LOG_JSON=1``.
        level: Minimum level name; default from ``LINEBUS_LOG_LEVEL`` or ``info``.
        stream: Where lines go; default stderr (stdout stays free for machine-readable output).
    """
    if json is None:
        json = os.environ.get("LINEBUS_LOG_JSON", "") in {"1", "true", "yes"}
    level = (level or os.environ.get("LINEBUS_LOG_LEVEL") or "info").lower()
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    tail: list[Any] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if json
        else [
            structlog.dev.ConsoleRenderer(colors=out.isatty() if hasattr(out, "isatty") else False)
        ]
    )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_stderr_logger if stream is None else structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(shared, tail, threshold, stream)


def _route_standard_logging(
    shared: list[Any], tail: list[Any], threshold: int, stream: Any
) -> None:
    """Render the libraries' ``logging`` records (paramiko, paho-mqtt, urllib3...) as linebus's
    own lines, with the logger's name and the record's ``extra`` fields (redacted as ours).
    Without a handler Python prints their warnings bare, which breaks a JSON log into non-JSON
    lines. Their chatter below WARNING stays out unless the level asks for more (debug)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            *shared,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)  # configured again: one handler, the latest settings
    root.addHandler(handler)
    root.setLevel(max(threshold, logging.WARNING) if threshold > logging.DEBUG else threshold)


#: Marks the root handler ``configure_logging`` installed (and replaces when called again).
_OURS = "_linebus_handler"


class _StderrHandler(logging.Handler):
    """A ``logging`` handler writing to ``sys.stderr`` as it is at each record (as
    ``_StderrLogger``), one write per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _StderrLogger().msg(self.format(record))
        except Exception:  # logging must never raise into the library that logged
            self.handleError(record)


def dump_stacks_on_signal() -> None:
    """Make ``STACK_DUMP_SIGNAL`` write every thread's Python stack to stderr, and go on.

    For a process that hangs: the supervisor sends it to a broker that does not answer in
    time, and anyone can send it by hand. faulthandler writes from the signal handler itself,
    so the dump comes even while the main thread is blocked in C (a ZeroMQ call, a lock).
    A stderr without a file descriptor (an embedding program's stream) leaves it off.
    """
    try:
        faulthandler.register(STACK_DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=False)
    except (AttributeError, ValueError, OSError):  # no fileno(): nowhere to write a dump
        return
