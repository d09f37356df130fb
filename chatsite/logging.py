"""Log output: one JSON object per line (DJANGO_LOG_FORMAT=json), and a filter that
redacts anything that looks like a credential, whatever the format.

Log ids and counts, never message bodies or tokens (docs/observability.md). The filter is
a safety net for tokens only: a message body cannot be recognised, so no logging call may
pass one.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

REDACTED = "[redacted]"
_PATTERNS = (
    # The value of an Authorization header, quoted (a headers dict) or not (a raw header).
    (re.compile(r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?)[^"',;\r\n]+"""), rf"\g<1>{REDACTED}"),
    # A bearer (or basic) credential anywhere else.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1> {REDACTED}"),
    # API tokens (ct_) and service keys (sk_). The 10-character prefix that the admin and
    # the logs show to recognise a key is too short to match, so it stays readable.
    (re.compile(r"(?<![A-Za-z0-9])(ct|sk)_[A-Za-z0-9_-]{16,}"), rf"\g<1>_{REDACTED}"),
    # Credentials in a query string or a cookie.
    (
        re.compile(r"(?i)\b(sessionid|csrftoken|token|api_key|apikey|key|password|secret)=[^&;\s\"']+"),
        rf"\g<1>={REDACTED}",
    ),
)
# Every attribute a LogRecord has before `extra` is merged in; the rest is `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_server: str | None = None


def redact(text: str) -> str:
    """``text`` with anything that looks like a bearer token, API key or password replaced."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def server_set(name: str | None) -> None:
    """This process's presence name, for the ``server`` field (chatsite.metrics.server_info)."""
    global _server
    _server = name


def server_name() -> str | None:
    if _server:
        return _server
    from django.conf import settings

    return (settings.PRESENCE_SERVER_NAME if settings.configured else "") or None


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of ``record``."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of an extra field's value, with its strings redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, depth + 1) for item in value]
    if depth < 4 and isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in value.items()}
    return redact(str(value))


class RedactFilter(logging.Filter):
    """Redacts credentials from a record's message, extra fields and traceback. Put it on
    handlers: a logger's filters do not see records propagated from its children."""

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a malformed call: let the handler report it as usual
        record.msg, record.args = redact(message), None
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self._exception_formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, server, then any
    ``extra`` fields (which never replace those), exc and stack when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
            "server": server_name(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, _clean(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)
