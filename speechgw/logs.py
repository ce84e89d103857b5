"""How ``speechgw serve`` writes its log: lines for people (``text``), or one JSON object per
line (``json``) for log shippers (Loki, Elasticsearch, CloudWatch), which otherwise have to
parse the message text.

In JSON each record carries ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``
and ``message``; an access-log record also carries its fields as typed values (``request``,
``protocol``, ``key``, ``audio_s``, ``processing_ms``, ...), given by the code that logs it as
``extra={"fields": {...}}``; an exception comes as ``exception``, its traceback in one string.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Literal

__all__ = ["FIELDS", "JsonFormatter", "configure"]

FIELDS = "fields"
"""The ``extra`` name under which a record carries structured fields."""

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            entry.update((k, v) for k, v in fields.items() if k not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, form: Literal["text", "json"]) -> None:
    """Route every logger through one stderr handler in ``form``, at ``level``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # the multipart parser warns of each malformed upload it reads: the client's error, answered
    # with 400 and the parser's reason, not the operator's (and one line per bad request)
    quieter = logging.ERROR if root.getEffectiveLevel() > logging.DEBUG else logging.NOTSET
    logging.getLogger("python_multipart").setLevel(quieter)
