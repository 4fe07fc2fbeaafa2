"""Whether the workbench can answer at once, and what it is still loading.

The default model is built (the first time) and loaded in the background after start: until then
the first request waited 15 s behind it while `/health` said healthy. Clients and orchestrators
wait for `ready` instead.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class Readiness:
    def __init__(self):
        self._lock = threading.Lock()
        self._loading: dict[str, float] = {}  # what -> since when (epoch seconds)
        self._failed: dict[str, str] = {}  # what -> why

    @contextmanager
    def loading(self, what: str):
        """Mark `what` as loading while the block runs; an error in it is kept as a problem."""
        with self._lock:
            self._loading[what] = time.time()
            self._failed.pop(what, None)
        try:
            yield
        except Exception as exc:
            with self._lock:
                self._failed[what] = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            with self._lock:
                self._loading.pop(what, None)

    def report(self) -> dict:
        """ready, what is loading (and for how long), and what failed to load."""
        with self._lock:
            now = time.time()
            loading = [{"what": what, "for_s": round(now - since, 1)}
                       for what, since in self._loading.items()]
            failed = [{"what": what, "error": why} for what, why in self._failed.items()]
        return {"ready": not loading and not failed, "loading": loading, "failed": failed}
