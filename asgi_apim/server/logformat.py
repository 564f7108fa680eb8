"""``--log-format json``: one JSON object per log line, for log shippers.

Each line holds the record's time (ISO 8601, UTC), level, logger and message,
the exception's traceback when there is one, and every extra field the record
carries: a refusal's ``method``, ``path``, ``peer``, ``api``, ``status``,
``code`` and ``detail`` (`asgi_apim._access`), uvicorn's access-log fields.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

# the attributes every LogRecord has: what is left over was given as ``extra``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JSONFormatter(logging.Formatter):
    """A `logging.Formatter` that writes each record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)
