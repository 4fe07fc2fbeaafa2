"""Keeping API keys out of responses, errors and logs.

A key reaches text in more shapes than its own: a provider's error quotes it inside JSON (a
newline becomes `\\n`), an exception's repr escapes it, a URL percent-encodes it, an HTML error
page entity-encodes it. Each shape is a separate string to find, so the redactor knows them all.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus

_SHOWN_TAIL = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def mask_key(key: str | None) -> str | None:
    """What a person may see of a key: its last 3 characters, only when it is long and they are plain
    (a quote or backslash shown in a mask would itself need escaping wherever the mask goes)."""
    if not key:
        return None
    return f"...{key[-3:]}" if len(key) >= 12 and set(key[-3:]) <= _SHOWN_TAIL else "***"


def key_forms(key: str) -> set[str]:
    """Every way `key` can appear in text that we know of."""
    json_ascii = json.dumps(key)[1:-1]
    json_raw = json.dumps(key, ensure_ascii=False)[1:-1]
    escaped = key.encode("unicode_escape").decode("ascii")  # repr's escapes, whichever quotes it picks
    forms = {
        key, json_ascii, json_raw,
        json.dumps(json_ascii)[1:-1], json.dumps(json_raw, ensure_ascii=False)[1:-1],  # JSON inside JSON
        repr(key)[1:-1], escaped, escaped.replace("'", "\\'"), escaped.replace('"', '\\"'),
        str(key.encode())[2:-1],  # repr of the bytes sent on the wire
        quote(key, safe=""), quote(key), quote_plus(key),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(key, safe="")),
        html.escape(key), html.escape(key, quote=False),
        base64.b64encode(key.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(key.encode()).decode().rstrip("="),
    }
    return {form for form in forms if len(form) >= 4}


class Redactor(logging.Filter):
    """Replaces every known key, in every form, in text and in log records. One per process; keys
    are added as they are configured."""

    def __init__(self):
        super().__init__()
        self._forms: dict[str, str] = {}  # form -> its mask
        self._pattern: re.Pattern | None = None  # every form, longest first: one pass over a text
        self._lock = threading.Lock()

    def add(self, key: str | None) -> None:
        if key and len(key) >= 4:
            mask = mask_key(key) or "***"
            with self._lock:
                self._forms = self._forms | {form: mask for form in key_forms(key)}
                longest_first = sorted(self._forms, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, longest_first)))

    def __call__(self, text: str) -> str:
        pattern, forms = self._pattern, self._forms  # add() swaps both, never edits them
        if pattern is None:
            return text
        return pattern.sub(lambda match: forms.get(match.group(), "***"), text)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
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
        """Filter every handler of the root logger, where all loggers' records end up, and uvicorn's
        own (they do not pass records on to the root: an access line quotes the request's URL)."""
        for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                if self not in handler.filters:
                    handler.addFilter(self)


redactor = Redactor()
