"""Structured logs: one JSON object per line on stderr, never secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

import orjson

_SECRET_MARKERS = ("password", "secret", "sasl.", "ssl.key", "token")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = "***" if _looks_secret(key) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # a tuple key, an int beyond 64 bits: still a line, never an error
            return json.dumps(_jsonable(entry), default=str)


def _jsonable(value: Any) -> Any:
    """``value`` with every mapping key a string, so the standard encoder cannot refuse it."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(item) for item in value]
    return value


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records (librdkafka's too: the Kafka clients log through the
    ``librdkafka`` logger) to ``stream`` (default stderr) as JSON lines at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
