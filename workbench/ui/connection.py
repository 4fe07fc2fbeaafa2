"""Which workbench the panels drive: this process's own `Workbench`, or a running service through
`workbench.client.Client` (the same methods, the same answers).

    connect()                                   # this process's Workbench (created once, on first use)
    connect(workbench)                          # a Workbench you made
    connect("http://127.0.0.1:8200", token=...) # a running service
"""

from __future__ import annotations

import atexit
import threading

from pydantic import ValidationError

from workbench.client import Client
from workbench.errors import Busy, InputError

_default = None
_default_lock = threading.Lock()


def connect(target=None, token: str | None = None):
    """A Workbench or a Client: the given one as it is, a Client for a URL, else this process's own
    Workbench (made on first use and shared by every panel; its workers stop when Python exits)."""
    global _default
    if isinstance(target, str):
        return Client(target, token)
    if target is not None:
        return target
    with _default_lock:
        if _default is None:
            from workbench.core import Workbench

            _default = Workbench()
            atexit.register(_default.close)
        return _default


def where(target) -> str:
    return target.url if isinstance(target, Client) else "this process"


def problems(exc: Exception) -> list[tuple[str | None, str]]:
    """Each (field, message) a refusal names: the workbench's checks, pydantic's, or a busy engine."""
    if isinstance(exc, InputError):
        return exc.errors
    if isinstance(exc, ValidationError):
        # Only pydantic's message, never its `input`: that could be an api_key.
        return [(str(e["loc"][0]) if e["loc"] else None, e["msg"]) for e in exc.errors()]
    if isinstance(exc, Busy):
        return [(exc.field or None, str(exc))]
    return [(None, f"{type(exc).__name__}: {exc}")]


def explain(exc: Exception) -> str:
    """A refusal as one line a person can act on: each field at fault and why."""
    return "; ".join(f"{field}: {message}" if field else message for field, message in problems(exc))
