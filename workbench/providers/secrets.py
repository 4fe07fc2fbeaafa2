"""Keeping API keys out of responses, errors and logs."""

from __future__ import annotations

import logging
import threading


def mask_key(key: str | None) -> str | None:
    """What a person may see of a key: its last 3 characters, and only when it is long."""
    if not key:
        return None
    return f"...{key[-3:]}" if len(key) >= 12 else "***"


class Redactor(logging.Filter):
    """Replaces every known key in text and in log records. One per process; keys are added
    as they are configured."""

    def __init__(self):
        super().__init__()
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def add(self, key: str | None) -> None:
        if key and len(key) >= 4:
            with self._lock:
                self._keys.add(key)

    def __call__(self, text: str) -> str:
        for key in self._keys:
            if key in text:
                text = text.replace(key, mask_key(key) or "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._keys:
            message = record.getMessage()
            clean = self(message)
            if clean != message or record.exc_info:
                if record.exc_info:
                    clean = self(clean + "\n" + logging.Formatter().formatException(record.exc_info))
                    record.exc_info = None
                    record.exc_text = None
                record.msg, record.args = clean, None
        return True

    def install(self) -> None:
        """Filter every handler of the root logger, where all loggers' records end up."""
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)


redactor = Redactor()
