"""structlog set up once per process: JSON off a TTY, console on one, secrets redacted."""

from __future__ import annotations

import atexit
import functools
import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"secret|token|password|passwd|authorization|api_?key|signature|credential", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_OUR_TOKENS = re.compile(r"\b(rt[a-z]?_[A-Za-z0-9_-]{16,}|whsec_[A-Za-z0-9+/=_-]{16,})")


# Any of the three above, in one search: most text holds none, and one search costs a third of
# three substitutions that find nothing (every log line passes through here).
_ANY_SECRET_TEXT = re.compile(
    "|".join(f"(?:{p.pattern})" for p in (_URL_PASSWORD, _OUR_TOKENS)) + r"|(?i:\bbearer\s)"
)


def _may_hold_secret(text: str) -> bool:
    """What each pattern cannot match without: `://` and `@`, `_`, or `bearer` in any case. A
    substring test is C speed; the patterns' searches cost a microsecond a value (the URL's
    scheme is tried from every letter of a long word), and nearly every value is a plain word,
    id, path or timestamp."""
    return ("://" in text and "@" in text) or "_" in text or "bearer" in text.lower()


def redact_text(text: str) -> str:
    """Remove passwords in URLs, bearer credentials and our own token formats from free text."""
    if not _may_hold_secret(text) or not _ANY_SECRET_TEXT.search(text):
        return text
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:" + REDACTED + "@", text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    return _OUR_TOKENS.sub(REDACTED, text)


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    """Log keys are few (the code's own names): each is judged once."""
    return bool(_SECRET_KEY.search(key)) and not key.endswith(("_id", "Id", "_count", "_mode", "Mode"))


def _redact_value(key: str, value: Any) -> Any:
    if _is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no secret or token ever reaches a log line."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value)
    return event_dict


REQUEST_ID: ContextVar[str | None] = ContextVar("routines_request_id", default=None)
"""The request (or the message of one) being served: on every log line written meanwhile and in
the trace header of what is published. Its own variable, not structlog's bound context: setting
it costs a tenth of binding, and every request the gateway answers sets it."""


def add_request_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: the request id being served, if any, on the line."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


@contextmanager
def request_id_bound(request_id: str | None) -> Iterator[None]:
    """`request_id` for the lines and trace headers of a `with` block, the one before it after."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def configure_logging(service: str, level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger for this process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[structlog.stdlib.add_logger_name, *shared_processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedPrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            # Lines from libraries (asyncio, aiohttp, nats) carry their stdlib logger's name.
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("aiohttp.access").disabled = True
    atexit.register(_silence_logging_at_exit)


def _silence_logging_at_exit() -> None:
    """Once the interpreter is exiting, late records (e.g. from finalizers) cannot be formatted
    any more (`sys.meta_path is None`): drop them instead of printing "--- Logging error ---"."""
    logging.raiseExceptions = False
    logging.getLogger().handlers[:] = [logging.NullHandler()]


def get_logger(name: str) -> Any:
    """A structlog logger whose every line carries `logger=<name>` (the module name)."""
    return structlog.get_logger(name)


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for, for `add_logger_name`."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "root")
