"""Structured logging: JSON lines off a terminal, readable colours on one, secrets never.

Every log line, ours or a library's (uvicorn, alembic, aiohttp go through the standard
``logging`` module and are rendered by the same structlog processors), passes through
:func:`redact`, which masks

* values of keys that name a secret (``token``, ``password``, ``api_key``, ``authorization``,
  ``cookie``, ``secret``...),
* passwords in URLs (``scheme://user:***@host``),
* secret query parameters and headers written inline (``X-Plex-Token=***``, ``apikey=***``,
  ``Bearer ***``),

so a token that reaches a message by accident is still not written out.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import structlog

from medianest.backends import MASK

_SECRET_KEY = re.compile(
    r"(token|passw(or)?d|secret|api[_-]?key|authorization|cookie|credential|private[_-]?key)",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@/\s]+)(?=@)")
_INLINE_SECRET = re.compile(
    r"(?P<head>(?:x-plex-token|x-api-key|api[_-]?key|apikey|token|password|access_token"
    r"|refresh_token|client_secret)[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s&\"',;}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{6,})")


def redact_text(text: str) -> str:
    """Mask URL passwords, inline ``key=value`` secrets and bearer tokens in free text."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _INLINE_SECRET.sub(lambda m: m["head"] + MASK, text)
    return _BEARER.sub(lambda m: m["head"] + MASK, text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key) and value is not None and not isinstance(value, bool):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(key, v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: mask every secret in the event before it is rendered."""
    event_dict.pop("color_message", None)
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.format_exc_info,
        redact,
    ]


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
) -> None:
    """Route structlog and the standard ``logging`` module through one renderer.

    Idempotent: calling it again replaces the handler (tests call it with their own stream).
    """
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and _isatty(stream))
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=_isatty(stream))
        if use_console
        else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    flush_logs()
    handler = _HubHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_medianest", False):
            root.removeHandler(old)
    handler._medianest = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("sqlalchemy.engine", "aiosqlite", "asyncio", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    global _request_log
    _request_log = _RequestLog(handler, json_lines=not use_console)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class _RequestLog:
    """The one-line-per-request log, written without structlog's processor chain.

    A busy gateway writes thousands of these lines a second, and the general path (bound
    logger, processors, redaction of every field, a stdlib ``LogRecord``, the formatter, a
    write system call per line) costs more than proxying the request. Its fields are fixed
    and cannot carry a secret (method, route *template*, status, duration, request id,
    client address), so in JSON mode the line is rendered here, in the shape the JSON
    renderer gives, and the lines of one event-loop iteration are written together at its
    end (like nginx's ``access_log ... buffer=``), to the same handler. Any other record
    written through that handler first writes the pending lines, so the order holds. In
    console mode the line takes the ordinary path.
    """

    def __init__(self, handler: logging.StreamHandler[Any] | None, *, json_lines: bool) -> None:
        self.handler = handler
        self.json_lines = json_lines and handler is not None
        self.pending: list[str] = []
        self.second, self.stamp = -1, ""

    def emit(self, logger: logging.Logger, fields: dict[str, Any]) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        if not self.json_lines:
            structlog.stdlib.get_logger(logger.name).info("request", **fields)
            return
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second, self.stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        fields.update(
            level="info", logger=logger.name, timestamp=f"{self.stamp}.{int(now % 1 * 1e6):06d}Z"
        )
        self.pending.append(json.dumps({"event": "request", **fields}, default=str))
        if len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        lines, handler = self.pending, self.handler
        if not lines or handler is None:
            return
        self.pending = []
        handler.acquire()
        try:
            handler.stream.write("\n".join(lines) + "\n")
            logging.StreamHandler.flush(handler)
        finally:
            handler.release()


class _HubHandler(logging.StreamHandler[Any]):
    """The stream handler of every log line; pending access lines go out before a record."""

    def emit(self, record: logging.LogRecord) -> None:
        _request_log.flush()
        super().emit(record)

    def flush(self) -> None:
        _request_log.flush()
        super().flush()


_request_log = _RequestLog(None, json_lines=False)


def log_request(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """Write the access line of one request (see :class:`_RequestLog`)."""
    _request_log.emit(logger, fields)


def flush_logs() -> None:
    """Write access lines still waiting for the end of the event-loop iteration."""
    _request_log.flush()


atexit.register(flush_logs)


def get_logger(name: str = "medianest") -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.stdlib.get_logger(name)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
